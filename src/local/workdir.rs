//! Where the local runner writes a run's files, and how, so that nobody else on the machine
//! can read them or redirect the writes: directories private to the user (mode 0700, owned by
//! them, writable by no one else), and files opened without following symbolic links.

use std::fs::{DirBuilder, File};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// `$XDG_STATE_HOME/ork/runs`, else `~/.local/state/ork/runs`, else `ork-UID` in the
/// temporary directory (a name no other user can take over: the directory is checked).
pub fn default_work_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("ork").join("runs");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local").join("state").join("ork").join("runs");
    }
    std::env::temp_dir().join(format!("ork-{}", nix::unistd::geteuid()))
}

/// Creates `dir` and its missing parents (mode 0700), or checks the existing one: see
/// [`check_private`].
pub fn prepare_work_dir(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the work directory {}: {e}", dir.display()))?;
    check_private(dir)
}

/// `parent/name`, created (mode 0700) or, when it exists, checked like the work directory:
/// a run's directory and each task's.
pub fn private_subdir(parent: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = parent.join(name);
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            check_private(&dir)?;
            Ok(dir)
        }
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// Checks that `dir` is a real directory (not a symbolic link), owned by this user, that no
/// one else may write to: otherwise another user could read the run's files or swap a
/// directory for a link and redirect its writes.
pub fn check_private(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect the work directory {shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{shown} is a symbolic link; ork writes run files only into a real directory \
             (give its target with --work-dir)"
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{shown} belongs to user id {}, not to you ({me}); choose another --work-dir",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} may be written by other users (mode {:o}); run `chmod go-w {shown}` or \
             choose another --work-dir",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Opens `path` for writing, created (mode 0600) or emptied, never through a symbolic link.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a").join("runs");
        prepare_work_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Again: the existing directory passes.
        prepare_work_dir(&dir).unwrap();
        let run = private_subdir(&dir, "r1").unwrap();
        assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
        assert_eq!(private_subdir(&dir, "r1").unwrap(), run);
    }

    #[test]
    fn refuses_shared_or_redirected_directories() {
        let base = tempfile::tempdir().unwrap();
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let message = prepare_work_dir(&shared).unwrap_err();
        assert!(
            message.contains("may be written by other users (mode 777)"),
            "{message}"
        );

        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path(), &link).unwrap();
        let message = prepare_work_dir(&link).unwrap_err();
        assert!(message.contains("is a symbolic link"), "{message}");
        // A run or task directory planted as a link is refused too.
        let work = base.path().join("work");
        prepare_work_dir(&work).unwrap();
        std::os::unix::fs::symlink("/", work.join("r1")).unwrap();
        assert!(
            private_subdir(&work, "r1")
                .unwrap_err()
                .contains("symbolic link")
        );

        let file = base.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(
            check_private(&file)
                .unwrap_err()
                .contains("is not a directory")
        );
    }

    #[test]
    fn refuses_a_directory_of_another_user() {
        let base = tempfile::tempdir().unwrap();
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Only root can give a directory away; as anyone else the case cannot be built.
        let nobody = nix::unistd::Uid::from_raw(65534);
        if nix::unistd::chown(&theirs, Some(nobody), None).is_err() {
            return;
        }
        let message = prepare_work_dir(&theirs).unwrap_err();
        assert!(
            message.contains("belongs to user id 65534, not to you"),
            "{message}"
        );
    }

    #[test]
    fn files_are_never_opened_through_a_link() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = base.path().join("attempt-1.stdout");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_file(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let fresh = base.path().join("attempt-2.stdout");
        create_file(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_default_is_per_user() {
        let dir = default_work_dir();
        let text = dir.to_string_lossy();
        assert!(
            text.ends_with("/ork/runs")
                || text.ends_with(&format!("ork-{}", nix::unistd::geteuid())),
            "{text}"
        );
    }
}
