//! An export's `restore_test:` section: how often, which points, and what
//! the restored copy must answer.

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// An export's `restore_test:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestConfig {
    /// How often `run --due` tests the export (default 7d).
    #[serde(default = "RestoreTestConfig::default_every")]
    pub every: HumanDuration,
    /// Besides the newest point, also one picked at random among those of
    /// this window (default 30d; `0s`: the newest only).
    #[serde(default = "RestoreTestConfig::default_window")]
    pub random_within: HumanDuration,
    /// What the restored copy must answer.
    #[serde(default)]
    pub checks: Vec<Check>,
}

impl RestoreTestConfig {
    fn default_every() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(7 * 86_400))
    }

    fn default_window() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(30 * 86_400))
    }
}

impl Default for RestoreTestConfig {
    fn default() -> Self {
        RestoreTestConfig {
            every: RestoreTestConfig::default_every(),
            random_within: RestoreTestConfig::default_window(),
            checks: Vec::new(),
        }
    }
}

/// One check of a restored copy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, untagged)]
pub enum Check {
    /// A query whose first value must read `expect` (databases).
    Sql { sql: String, expect: String },
    /// At least this many files (directories).
    Files { min_files: u64 },
}
