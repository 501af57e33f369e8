//! The ownership audit: reads the workers' `--audit` JSON lines and proves that no partition
//! was owned by two members at any instant, that every record was consumed by a member that
//! owned its partition at the time, and that every produced offset was consumed (safety); and
//! measures the longest time any partition had no owner while a member was live (liveness).
//!
//! A member is live from its first line (the worker writes `started`) until its `stopping` line
//! (a clean shutdown begins) or, killed, its last line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lagbalance::NamedPartition;
use serde::Deserialize;

/// One line of a worker's `--audit` file (`assignor/examples/worker.rs`).
#[derive(Debug, Deserialize)]
pub struct Line {
    pub ts_ms: u64,
    #[serde(default)]
    pub member: Option<String>,
    pub event: String,
    #[serde(default)]
    pub partitions: Vec<(String, i32)>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub partition: Option<i32>,
    #[serde(default)]
    pub offset: Option<i64>,
    /// `role` lines: the generation the member was in.
    #[serde(default)]
    pub generation: Option<i32>,
    /// `consumed` lines: when `poll` handed the record to the application.
    #[serde(default)]
    pub handed_ms: Option<u64>,
}

impl Line {
    /// When a consumed record reached the application, the instant its ownership is judged
    /// at: a process frozen while it worked on a batch finishes (and logs) those records after
    /// waking, but they were handed out while the partition was its own (older logs: `ts_ms`).
    pub fn handed_at(&self) -> u64 {
        self.handed_ms.unwrap_or(self.ts_ms)
    }
}

/// One member's ownership of one partition, `[start, end]` in ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub member: String,
    pub start: u64,
    pub end: u64,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Report {
    /// `(partition, first owner, second owner, overlap start ms, overlap end ms)`.
    pub overlaps: Vec<(NamedPartition, String, String, u64, u64)>,
    /// Records handed to a member that did not own the partition then.
    pub unowned_consumption: Vec<(String, NamedPartition, i64, u64)>,
    /// Produced offsets nobody consumed.
    pub missing: Vec<(NamedPartition, i64)>,
    /// Consumed offsets that were consumed more than once (redelivery), with the count.
    pub duplicates: usize,
    pub consumed: usize,
    pub ownership_changes: usize,
    pub intervals: BTreeMap<NamedPartition, Vec<Interval>>,
    /// When each member was live, `(member, from ms, until ms)`.
    pub live: Vec<(String, u64, u64)>,
    /// The longest stretch one partition had no owner while some member was live:
    /// `(partition, from ms, length ms)`.
    pub longest_unowned: Option<(NamedPartition, u64, u64)>,
}

impl Report {
    /// Whether `member` owned any partition at some point.
    pub fn ever_owned(&self, member: &str) -> bool {
        self.intervals
            .values()
            .flatten()
            .any(|i| i.member == member)
    }

    pub fn is_clean(&self) -> bool {
        self.overlaps.is_empty() && self.unowned_consumption.is_empty() && self.missing.is_empty()
    }
}

/// Per-member state while replaying its log.
#[derive(Default)]
struct Replay {
    open: BTreeMap<NamedPartition, u64>,
    /// Last consumed ts per partition (ends a `lost` interval: a fenced member stopped
    /// consuming before it learned it lost the partition).
    last_consumed: BTreeMap<NamedPartition, u64>,
    last_ts: u64,
    first_ts: Option<u64>,
    stopping_ts: Option<u64>,
}

/// Check the audit files against the produced offsets.
pub fn check(
    files: &[impl AsRef<Path>],
    produced: &BTreeSet<(NamedPartition, i64)>,
) -> Result<Report> {
    let mut report = Report::default();
    let mut consumed: BTreeMap<(NamedPartition, i64), usize> = BTreeMap::new();
    let mut consumption: Vec<(String, NamedPartition, i64, u64)> = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut r = Replay::default();
        let mut member_name = String::new();
        for (n, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            // A worker killed with SIGKILL may leave half a line at the end: ignore only that.
            let line: Line = match serde_json::from_str(raw) {
                Ok(l) => l,
                Err(_) if n + 1 == text.lines().count() => break,
                Err(e) => return Err(e).with_context(|| format!("{}:{}", f.display(), n + 1)),
            };
            let member = line
                .member
                .clone()
                .unwrap_or_else(|| f.display().to_string());
            member_name = member.clone();
            r.last_ts = r.last_ts.max(line.ts_ms);
            r.first_ts.get_or_insert(line.ts_ms);
            match line.event.as_str() {
                "stopping" => {
                    r.stopping_ts.get_or_insert(line.ts_ms);
                }
                "assigned" => {
                    report.ownership_changes += 1;
                    for tp in line.partitions {
                        r.open.insert(tp, line.ts_ms);
                    }
                }
                "revoked" | "lost" => {
                    report.ownership_changes += 1;
                    for tp in line.partitions {
                        if let Some(start) = r.open.remove(&tp) {
                            let end = if line.event == "lost" {
                                r.last_consumed
                                    .get(&tp)
                                    .copied()
                                    .unwrap_or(start)
                                    .max(start)
                            } else {
                                line.ts_ms
                            };
                            report.intervals.entry(tp).or_default().push(Interval {
                                member: member.clone(),
                                start,
                                end,
                            });
                        }
                    }
                }
                "consumed" => {
                    let handed = line.handed_at();
                    let (Some(t), Some(p), Some(o)) = (line.topic, line.partition, line.offset)
                    else {
                        continue;
                    };
                    let tp = (t, p);
                    r.last_consumed.insert(tp.clone(), handed);
                    *consumed.entry((tp.clone(), o)).or_default() += 1;
                    consumption.push((member, tp, o, handed));
                }
                _ => {}
            }
        }
        // Still owned when the log ends (the worker was killed): owned until its last line.
        for (tp, start) in std::mem::take(&mut r.open) {
            report.intervals.entry(tp).or_default().push(Interval {
                member: member_name.clone(),
                start,
                end: r.last_ts,
            });
        }
        if let Some(first) = r.first_ts {
            report.live.push((
                member_name.clone(),
                first,
                r.stopping_ts.unwrap_or(r.last_ts),
            ));
        }
    }
    for (tp, ivs) in report.intervals.iter_mut() {
        ivs.sort_by_key(|i| (i.start, i.end));
        for (i, a) in ivs.iter().enumerate() {
            for b in &ivs[i + 1..] {
                if b.member != a.member && b.start < a.end && a.start < b.end {
                    report.overlaps.push((
                        tp.clone(),
                        a.member.clone(),
                        b.member.clone(),
                        b.start.max(a.start),
                        a.end.min(b.end),
                    ));
                }
            }
        }
    }
    for (member, tp, offset, ts) in consumption {
        let owned = report.intervals.get(&tp).is_some_and(|ivs| {
            ivs.iter()
                .any(|i| i.member == member && i.start <= ts && ts <= i.end)
        });
        if !owned {
            report.unowned_consumption.push((member, tp, offset, ts));
        }
    }
    report.longest_unowned = longest_unowned(&report, produced);
    report.consumed = consumed.values().sum();
    report.duplicates = consumed.values().filter(|c| **c > 1).map(|c| c - 1).sum();
    report.missing = produced
        .iter()
        .filter(|k| !consumed.contains_key(*k))
        .cloned()
        .collect();
    Ok(report)
}

/// Sorted, overlapping or touching intervals joined.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The longest part of `live` that `owned` does not cover: `(from, length)`.
fn longest_gap(live: &[(u64, u64)], owned: &[(u64, u64)]) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut consider = |from: u64, to: u64| {
        if to > from && best.is_none_or(|(_, len)| to - from > len) {
            best = Some((from, to - from));
        }
    };
    for &(a, b) in live {
        let mut cursor = a;
        for &(s, e) in owned.iter().filter(|(s, e)| *e > a && *s < b) {
            consider(cursor, s.min(b));
            cursor = cursor.max(e);
        }
        consider(cursor, b);
    }
    best
}

/// Over every partition that was produced to or owned: the longest time it had no owner while
/// some member was live.
fn longest_unowned(
    report: &Report,
    produced: &BTreeSet<(NamedPartition, i64)>,
) -> Option<(NamedPartition, u64, u64)> {
    let live = merge(report.live.iter().map(|(_, a, b)| (*a, *b)).collect());
    let partitions: BTreeSet<&NamedPartition> = produced
        .iter()
        .map(|(tp, _)| tp)
        .chain(report.intervals.keys())
        .collect();
    partitions
        .into_iter()
        .filter_map(|tp| {
            let owned = report
                .intervals
                .get(tp)
                .map(|ivs| merge(ivs.iter().map(|i| (i.start, i.end)).collect()))
                .unwrap_or_default();
            longest_gap(&live, &owned).map(|(from, len)| (tp.clone(), from, len))
        })
        .max_by_key(|(_, _, len)| *len)
}

/// Wait (bounded by `limit`) until every produced offset shows up as consumed in `files`.
pub async fn wait_all_consumed(
    files: &[&Path],
    produced: &BTreeSet<(NamedPartition, i64)>,
    limit: std::time::Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let missing = check(files, produced)?.missing.len();
        if missing == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{missing} records never consumed within {limit:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Check `files`, print a one-line summary under `label`, and fail on any double ownership,
/// consumption without ownership, loss, or a partition left without an owner longer than
/// `max_unowned` while a member was live.
pub fn assert_clean(
    label: &str,
    files: &[&Path],
    produced: &BTreeSet<(NamedPartition, i64)>,
    max_unowned: Duration,
) -> Report {
    let report = check(files, produced).expect("audit files readable");
    let (worst, from, unowned_ms) = report.longest_unowned.clone().unwrap_or_default();
    eprintln!(
        "{label}: {} produced, {} consumed, {} redelivered, {} ownership changes, \
         longest unowned {unowned_ms} ms ({worst:?} from {from}; bound {} ms)",
        produced.len(),
        report.consumed,
        report.duplicates,
        report.ownership_changes,
        max_unowned.as_millis()
    );
    assert!(
        report.overlaps.is_empty(),
        "{label}: double ownership: {:?}",
        report.overlaps
    );
    let unowned = &report.unowned_consumption;
    assert!(
        unowned.is_empty(),
        "{label}: consumed without owning: {:?}",
        &unowned[..unowned.len().min(5)]
    );
    assert!(
        report.missing.is_empty(),
        "{label}: {} records lost",
        report.missing.len()
    );
    assert!(
        u128::from(unowned_ms) <= max_unowned.as_millis(),
        "{label}: {worst:?} had no owner for {unowned_ms} ms from {from} while members were \
         live (bound {} ms)",
        max_unowned.as_millis()
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    fn produced(n: i64) -> BTreeSet<(NamedPartition, i64)> {
        (0..n).map(|o| (("t".to_string(), 0), o)).collect()
    }

    #[test]
    fn clean_handover_passes() {
        let d = tempdir();
        let a = write(
            &d,
            "a",
            &[
                r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":2,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
                r#"{"ts_ms":3,"member":"a","event":"revoked","partitions":[["t",0]]}"#,
            ],
        );
        let b = write(
            &d,
            "b",
            &[
                r#"{"ts_ms":3,"member":"b","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":4,"member":"b","event":"consumed","topic":"t","partition":0,"offset":1}"#,
            ],
        );
        let r = check(&[a, b], &produced(2)).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.consumed, 2);
    }

    #[test]
    fn overlap_unowned_consumption_and_loss_are_caught() {
        let d = tempdir();
        let a = write(
            &d,
            "a",
            &[
                r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":5,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
                r#"{"ts_ms":6,"member":"a","event":"revoked","partitions":[["t",0]]}"#,
                r#"{"ts_ms":7,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
            ],
        );
        let b = write(
            &d,
            "b",
            &[r#"{"ts_ms":4,"member":"b","event":"assigned","partitions":[["t",0]]}"#],
        );
        let r = check(&[a, b], &produced(2)).unwrap();
        assert_eq!(r.overlaps.len(), 1, "{r:?}");
        assert_eq!(r.unowned_consumption.len(), 1);
        assert_eq!(r.missing, vec![(("t".to_string(), 0), 1)]);
        assert_eq!(r.duplicates, 1);
    }

    #[test]
    fn a_lost_partition_ends_at_the_last_record_consumed() {
        let d = tempdir();
        // a was stopped after consuming at ts 2; b took over at 10; a learned of it at 20.
        let a = write(
            &d,
            "a",
            &[
                r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":2,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
                r#"{"ts_ms":20,"member":"a","event":"lost","partitions":[["t",0]]}"#,
            ],
        );
        let b = write(&d, "b", B_TAKES_OVER_AT_10);
        let r = check(&[a, b], &produced(2)).unwrap();
        assert!(r.is_clean(), "{r:?}");
    }

    #[test]
    fn only_a_half_written_last_line_is_ignored() {
        // A worker killed mid-write leaves half a line at the end of its log; anywhere else a
        // broken line is an error, not something to skip.
        let d = tempdir();
        let lines = [
            r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
            r#"{"ts_ms":2,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
            r#"{"ts_ms":3,"member":"a","event":"consumed","topic":"t","partition":0,"offset":1"#,
        ];
        let a = write(&d, "a", &lines);
        let r = check(&[a], &produced(2)).unwrap();
        assert_eq!(r.consumed, 1);
        assert_eq!(r.missing, vec![(("t".to_string(), 0), 1)]);
        let broken_inside = [lines[0], lines[2], lines[1]];
        let a = write(&d, "a2", &broken_inside);
        assert!(check(&[a], &produced(2)).is_err());
    }

    /// b owns t-0 from ts 10 and reads offsets 1 and 0 (the second a redelivery).
    const B_TAKES_OVER_AT_10: &[&str] = &[
        r#"{"ts_ms":10,"member":"b","event":"assigned","partitions":[["t",0]]}"#,
        r#"{"ts_ms":11,"member":"b","event":"consumed","topic":"t","partition":0,"offset":1}"#,
        r#"{"ts_ms":12,"member":"b","event":"consumed","topic":"t","partition":0,"offset":0}"#,
    ];

    #[test]
    fn a_record_handed_out_before_a_freeze_counts_at_its_hand_out() {
        // a got offset 0 at ts 2 and was frozen before finishing it; b took over at 10 and read
        // it again; a woke, logged offset 0 at 30 and learned it had lost the partition.
        let d = tempdir();
        let a_lines = |handed: &str| {
            [
                r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#.to_string(),
                format!(
                    r#"{{"ts_ms":30,{handed}"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}}"#
                ),
                r#"{"ts_ms":30,"member":"a","event":"lost","partitions":[["t",0]]}"#.to_string(),
            ]
        };
        let b = write(&d, "b", B_TAKES_OVER_AT_10);
        let handed = a_lines(r#""handed_ms":2,"#);
        let a = write(
            &d,
            "a",
            &handed.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let r = check(&[a, b.clone()], &produced(2)).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.duplicates, 1);
        // Without the hand-out time the same log reads as a serving records it no longer owned.
        let done_only = a_lines("");
        let a = write(
            &d,
            "a",
            &done_only.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let r = check(&[a, b], &produced(2)).unwrap();
        assert_eq!(r.overlaps.len(), 1, "{r:?}");
    }

    #[test]
    fn the_longest_unowned_stretch_counts_only_while_a_member_is_live() {
        let d = tempdir();
        // a owns t-0 from 10 to 20 and is killed; b is live from 5, owns it again from 50, and
        // begins stopping at 60 (what happens after does not count).
        let a = write(
            &d,
            "a",
            &[
                r#"{"ts_ms":2,"member":"a","event":"started"}"#,
                r#"{"ts_ms":10,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":20,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
            ],
        );
        let b = write(
            &d,
            "b",
            &[
                r#"{"ts_ms":5,"member":"b","event":"started"}"#,
                r#"{"ts_ms":50,"member":"b","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":55,"member":"b","event":"consumed","topic":"t","partition":0,"offset":1}"#,
                r#"{"ts_ms":60,"member":"b","event":"stopping"}"#,
                r#"{"ts_ms":61,"member":"b","event":"revoked","partitions":[["t",0]]}"#,
                r#"{"ts_ms":500,"member":"b","event":"role"}"#,
            ],
        );
        let r = check(&[a, b], &produced(2)).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.longest_unowned, Some((("t".to_string(), 0), 20, 30)));
    }

    #[test]
    fn a_partition_nobody_ever_owned_is_unowned_for_the_whole_live_time() {
        let d = tempdir();
        let a = write(
            &d,
            "a",
            &[
                r#"{"ts_ms":0,"member":"a","event":"started"}"#,
                r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
                r#"{"ts_ms":90,"member":"a","event":"stopping"}"#,
            ],
        );
        let mut produced = produced(1);
        produced.insert((("t".to_string(), 1), 0));
        let r = check(&[a], &produced).unwrap();
        assert_eq!(r.longest_unowned, Some((("t".to_string(), 1), 0, 90)));
    }

    fn tempdir() -> std::path::PathBuf {
        crate::unique_temp_dir("audit-test").unwrap()
    }
}
