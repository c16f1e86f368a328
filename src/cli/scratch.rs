//! Scratch directories that `demo` and `bench` own: created fresh at the
//! start of a run, and wiped only when an earlier run of the same command
//! made them, never a directory the user keeps something in.

use std::path::Path;

use super::CliError;

/// Creates `dir` empty, holding only the `marker` file. An existing `dir` is
/// wiped when it is empty or holds `marker`; anything else is refused.
pub fn fresh_dir(dir: &Path, marker: &str) -> Result<(), CliError> {
    let shown = dir.display();
    if dir.exists() {
        let is_empty = std::fs::read_dir(dir)
            .map_err(|e| CliError::io(format!("read {shown}"), e))?
            .next()
            .is_none();
        if !is_empty && !dir.join(marker).is_file() {
            return Err(CliError::failed(format!(
                "refusing to wipe {shown}: it is not empty and was not made by factwal (no {marker} file); \
                 pass another --dir"
            )));
        }
        remove_dir(dir)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(format!("create {shown}"), e))?;
    std::fs::write(dir.join(marker), b"made by factwal; the next run wipes this directory\n")
        .map_err(|e| CliError::io(format!("write {}", dir.join(marker).display()), e))
}

pub fn remove_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::remove_dir_all(dir).map_err(|e| CliError::io(format!("remove {}", dir.display()), e))
}
