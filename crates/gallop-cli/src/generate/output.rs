//! The `-o/--output` file, checked before any work: a render of minutes must not end in
//! "cannot write". The video goes to a temporary file beside the output, made up front (which
//! proves the folder is writable), and is renamed over the output only when complete, so a failed
//! or interrupted run leaves no partial MP4 and does not clobber an earlier one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub(super) struct OutputFile {
    path: PathBuf,
    partial: tempfile::NamedTempFile,
}

impl OutputFile {
    /// Refuses a name that is not `.mp4` or names a folder, creates the folder when missing, and
    /// opens the temporary file in it.
    pub(super) fn prepare(path: &Path) -> anyhow::Result<OutputFile> {
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
        {
            bail!(
                "-o/--output: {} must end in .mp4 (gallop writes MP4 video)",
                path.display()
            );
        }
        if path.is_dir() {
            bail!(
                "-o/--output: {} is a folder; name the file to write in it",
                path.display()
            );
        }
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(folder).with_context(|| {
            format!(
                "-o/--output: cannot create the folder {} for {}",
                folder.display(),
                path.display()
            )
        })?;
        let mut builder = tempfile::Builder::new();
        builder.prefix(".gallop-").suffix(".mp4.part");
        // What File::create gives (less the umask), not a temp file's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let partial = builder
            .tempfile_in(folder)
            .with_context(|| format!("-o/--output: cannot write in {}", folder.display()))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            partial,
        })
    }

    /// Writes the video and puts it in place.
    pub(super) fn write(mut self, mp4: &[u8]) -> anyhow::Result<()> {
        let cannot = || format!("-o/--output: cannot write {}", self.path.display());
        self.partial.write_all(mp4).with_context(cannot)?;
        self.partial.flush().with_context(cannot)?;
        let path = self.path.clone();
        self.partial
            .persist(&path)
            .map_err(|e| anyhow::Error::new(e.error))
            .with_context(|| format!("-o/--output: cannot write {}", path.display()))?;
        Ok(())
    }
}
