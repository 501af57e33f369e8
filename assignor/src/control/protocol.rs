//! The control channel's wire format: the messages both ends exchange and how they are framed
//! (one JSON document per line, each way, lines capped in length).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::assign::model::{MemberStats, NamedPartition};

/// Longest line either end accepts unless configured otherwise, bytes.
pub(super) const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// CPU measured by the agent for the pod. Fold into [`MemberStats`] with
/// [`CapacitySample::apply_to`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacitySample {
    /// Cores in use (finite, ≥ 0) or `None`.
    #[serde(default)]
    pub cpu_used_cores: Option<f64>,
    /// Core limit of the pod (finite, > 0) or `None`.
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// Agent's wall clock, milliseconds since the Unix epoch.
    #[serde(default)]
    pub measured_at_ms: u64,
}

impl CapacitySample {
    /// Drop values that are not plausible numbers (NaN, infinite, negative, zero limit).
    pub fn sanitised(mut self) -> Self {
        self.cpu_used_cores = self.cpu_used_cores.filter(|c| c.is_finite() && *c >= 0.0);
        self.cpu_limit_cores = self.cpu_limit_cores.filter(|c| c.is_finite() && *c > 0.0);
        self
    }

    /// Copy the CPU figures into the stats the member publishes in its subscription.
    /// Unknown values leave the member's own figures untouched.
    pub fn apply_to(&self, stats: &mut MemberStats) {
        if let Some(u) = self.cpu_used_cores {
            stats.cpu_used_cores = Some(u);
        }
        if let Some(l) = self.cpu_limit_cores {
            stats.cpu_limit_cores = Some(l);
        }
    }
}

/// Who the app's consumer currently is in its group, as the consumer publishes it to its agent
/// over the control channel (the `identity` of every [`Reply`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppIdentity {
    pub group: String,
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Current generation, −1 when not in a generation.
    #[serde(default = "minus_one")]
    pub generation: i32,
    /// Partitions currently assigned to this member. The agent needs them where the broker's
    /// DescribeGroups hides assignments (tansu 0.6.0 returns empty member blobs).
    #[serde(default)]
    pub partitions: Vec<NamedPartition>,
}

fn minus_one() -> i32 {
    -1
}

/// One request line from the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Shared token, required when the listener has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

/// The operation of a [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Only ask for the identity.
    Hello,
    Leave {
        cooldown_ms: u64,
        #[serde(default)]
        reason: String,
    },
    Rejoin {
        #[serde(default)]
        reason: String,
    },
    Capacity(CapacitySample),
}

/// One reply line from the consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The member's identity as the consumer last published it (`None` before it joined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AppIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `msg` as one line: its JSON and a newline.
pub(super) fn encode_line(msg: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    Ok(line)
}

/// Read one line into `buf`, at most `max` bytes plus its newline; the number of bytes read
/// (0 at end of stream). A line that does not end in a newline was longer than `max` or cut off
/// by the end of the stream; the caller tells which from its length.
pub(super) async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    reader.take(max as u64 + 1).read_until(b'\n', buf).await
}

/// A line without its trailing newline and whitespace.
pub(super) fn trim_line(line: &[u8]) -> &[u8] {
    let mut s = line;
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
