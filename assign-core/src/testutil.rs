//! Small builders for unit tests.

use crate::model::{GroupView, MemberView, TopicInfo, Tp};

/// A view with `topics` as (name, partitions), already sorted by the caller.
pub(crate) fn view(generation: i32, topics: &[(&str, i32)], members: Vec<MemberView>) -> GroupView {
    GroupView {
        generation,
        topics: topics
            .iter()
            .map(|&(name, partitions)| TopicInfo {
                name: name.to_string(),
                partitions,
            })
            .collect(),
        members,
        stats: None,
        now_ms: 0,
    }
}

/// A member subscribing to `topics` and claiming `owned` at `generation`.
pub(crate) fn member(
    id: &str,
    topics: &[u32],
    owned: &[(u32, i32)],
    generation: i32,
) -> MemberView {
    MemberView {
        member_id: id.to_string(),
        topics: topics.to_vec(),
        owned: owned.iter().map(|&(t, p)| Tp::new(t, p)).collect(),
        generation,
        ..MemberView::default()
    }
}
