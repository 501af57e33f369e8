pub mod codec;
pub mod fatal;
pub mod machine;

pub use codec::{Assignment, Subscription};
pub use fatal::{FencedIn, GroupFatal};
pub use machine::{
    Input, JoinAnswer, MemberConfig, Membership, Output, Phase, Request, Response,
    CAPACITY_REJOIN_MIN_INTERVAL_MS,
};

#[cfg(test)]
mod machine_tests;
