pub mod codec;
pub mod fatal;
pub mod machine;

pub use codec::{Assignment, Subscription};
pub use fatal::{FencedIn, GroupFatal};
pub use machine::{
    capacity_news_calls_for_rejoin, Input, JoinAnswer, MemberConfig, Membership, Output, Phase,
    Request, Response, CAPACITY_REJOIN_MIN_INTERVAL_MS,
};

#[cfg(test)]
mod machine_tests;
