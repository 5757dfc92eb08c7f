//! Shell completions (bash, zsh, fish) and man pages, from the clap
//! definitions themselves: `drp-agent generate-assets --out DIR` (hidden;
//! the packages run it at build time).

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Writes `DIR/man/*.1` (one page per command and subcommand) and
/// `DIR/completions/` (`<bin>.bash`, `_<bin>`, `<bin>.fish`); the files written.
pub fn write(mut cmd: clap::Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(&man)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            &name,
            &completions,
        )?);
    }
    written.sort();
    Ok(written)
}

/// `generate-assets --out DIR` of either binary.
pub fn run(
    cmd: clap::Command,
    dir: &Path,
    out: &crate::Output,
) -> drp_core::Result<drp_core::ExitCode> {
    let written = write(cmd, dir).map_err(|e| drp_core::Error::io_path("cannot write", dir, e))?;
    if !out.quiet {
        println!("wrote {} files under {}", written.len(), dir.display());
    }
    Ok(drp_core::ExitCode::Ok)
}
