//! Paths written in a policy. A leaf: the policy, the sources and the
//! backends all resolve them, so this module imports none of them.

use std::path::{Path, PathBuf};

/// A path written in a policy, resolved against the policy's folder.
pub fn resolve_relative(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
