//! The README's first set-up step, `scripts/install-deps`, run from a clean clone of the
//! repository the way a new user runs it: as root on a machine without sudo (containers,
//! cloud images), as a user with sudo, and as a user without it. The system's package
//! tools are stand-ins that record what they were asked (nothing is installed), and the
//! clone's Python references are already in place, so the test checks the script's own
//! decisions: who runs apt-get, what it installs, and what a user without a way to become
//! root is told.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use shardbot_e2e::script::root;

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The outcome of `bash scripts/install-deps` in a clean clone: (success, output, what the
/// package tools were asked).
fn install_deps(uid: u32, with_sudo: bool, installed: bool) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("clone");
    let status = Command::new("git")
        .args(["clone", "-q"])
        .arg(root())
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success(), "git clone of the checkout");
    // The Python references, as a previous run left them.
    fs::create_dir_all(clone.join("var/pyenv/bin")).unwrap();
    write_exe(&clone.join("var/pyenv/bin/python"), "#!/bin/sh\nexit 0\n");
    // A PATH with only what the script needs: real tools, and stand-ins that log.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for tool in ["bash", "grep", "dirname", "env", "cat"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let log = dir.path().join("asked.log");
    let log_s = log.display();
    write_exe(&bin.join("id"), &format!("#!/bin/sh\necho {uid}\n"));
    write_exe(
        &bin.join("dpkg-query"),
        if installed {
            "#!/bin/sh\nprintf 'install ok installed'\n"
        } else {
            "#!/bin/sh\nexit 1\n"
        },
    );
    write_exe(
        &bin.join("apt-get"),
        &format!("#!/bin/sh\necho \"apt-get $* (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)\" >> {log_s}\n"),
    );
    write_exe(&bin.join("cargo"), "#!/bin/sh\nexit 0\n");
    if with_sudo {
        write_exe(
            &bin.join("sudo"),
            &format!("#!/bin/sh\necho \"sudo $1\" >> {log_s}\nexec \"$@\"\n"),
        );
    }
    let out = Command::new(bin.join("bash"))
        .arg(clone.join("scripts/install-deps"))
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let (ok, text) = shardbot_e2e::outcome(&out);
    (ok, text, fs::read_to_string(&log).unwrap_or_default())
}

const PACKAGES: &str = "cmake iproute2 supervisor python3-venv chromium chromium-driver";

#[test]
fn as_root_without_sudo_apt_get_runs_itself() {
    let (ok, out, asked) = install_deps(0, false, false);
    assert!(ok, "{out}");
    assert_eq!(
        asked,
        format!(
            "apt-get update -qq (DEBIAN_FRONTEND=noninteractive)\n\
             apt-get install -y -qq --no-install-recommends {PACKAGES} (DEBIAN_FRONTEND=noninteractive)\n"
        ),
        "{out}"
    );
}

#[test]
fn as_a_user_with_sudo_only_apt_get_runs_as_root() {
    let (ok, out, asked) = install_deps(1000, true, false);
    assert!(ok, "{out}");
    let lines: Vec<&str> = asked.lines().collect();
    assert_eq!(
        lines,
        [
            "sudo env",
            "apt-get update -qq (DEBIAN_FRONTEND=noninteractive)",
            "sudo env",
            &format!(
                "apt-get install -y -qq --no-install-recommends {PACKAGES} (DEBIAN_FRONTEND=noninteractive)"
            ),
        ],
        "{out}"
    );
}

#[test]
fn a_user_without_sudo_is_told_how() {
    let (ok, out, asked) = install_deps(1000, false, false);
    assert!(!ok, "{out}");
    assert!(
        out.contains("needs root: run this as root, or install sudo"),
        "{out}"
    );
    assert!(asked.is_empty(), "nothing was asked: {asked}");
}

#[test]
fn with_every_package_present_nothing_is_installed() {
    let (ok, out, asked) = install_deps(1000, false, true);
    assert!(ok, "{out}");
    assert!(out.contains("system packages present"), "{out}");
    assert!(asked.is_empty(), "{asked}");
}
