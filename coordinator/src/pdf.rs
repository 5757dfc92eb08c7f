//! `drp report --pdf`: the report's HTML page printed to PDF by headless
//! Chromium.

use drp_core::Result;

/// Prints `html` to the PDF file `out` with headless Chromium (no network:
/// the page is self-contained).
pub fn print_pdf(html: &str, out: &std::path::Path) -> Result<()> {
    let dir = tempfile_dir()?;
    let page = dir.join("report.html");
    std::fs::write(&page, html).map_err(|e| drp_core::Error::io_path("cannot write", &page, e))?;
    let out_abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| {
            drp_core::Error::Failed("printing a PDF needs Chromium (apt install chromium)".into())
        })?;
    let status = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--print-to-pdf={}", out_abs.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .map_err(|e| drp_core::Error::Failed(format!("cannot start {browser}: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.status.success() || !out_abs.is_file() {
        return Err(drp_core::Error::Failed(format!(
            "{browser} did not print {}: {}",
            out.display(),
            String::from_utf8_lossy(&status.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// A private folder for the browser's profile and the page.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("drp-pdf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| drp_core::Error::io_path("cannot create", &dir, e))?;
    Ok(dir)
}
