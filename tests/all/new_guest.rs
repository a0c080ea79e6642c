//! `host new`: a guest crate created outside the workspace builds with the
//! one command the host prints and runs with the other, as a user types
//! them (issue 17, blocker 1: a guest of one's own did not build as
//! documented); bad names, occupied directories and a missing SDK are
//! refused with exit 2 and a message that says what to do.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{HostCommand, TempDir, host_bin};

/// The outer build's settings, which are not for the new crate's build.
const OUTER_BUILD_VARS: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
];

/// Prefixes of outer build settings: `CARGO_BUILD_TARGET`, `CARGO_TARGET_DIR`,
/// `CARGO_TARGET_<TRIPLE>_RUSTFLAGS`, `CARGO_PROFILE_RELEASE_LTO`, ...
const OUTER_BUILD_PREFIXES: &[&str] = &["CARGO_BUILD_", "CARGO_TARGET_", "CARGO_PROFILE_"];

/// The longest the crate's build may take: its dependencies (wit-bindgen
/// and what it needs) are built from scratch, nothing is shared with the
/// workspace's target directory.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

fn utf8(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `cargo build --release` in `dir`, as a user runs it there: the cargo of
/// this test run, with none of the outer build's settings; killed and
/// failed after [`BUILD_TIMEOUT`], with cargo's log in the message.
fn cargo_build_release(dir: &Path) {
    let log_path = dir.join("cargo-build.log");
    let log = std::fs::File::create(&log_path).expect("create build log");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--release"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log);
    for var in OUTER_BUILD_VARS {
        cmd.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if OUTER_BUILD_PREFIXES.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(&var);
        }
    }
    let mut child = cmd.spawn().expect("run cargo");
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`cargo build --release` did not finish within {BUILD_TIMEOUT:?}\n--- cargo\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "`cargo build --release` of the new crate failed ({status})\n--- cargo\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}

#[test]
fn a_new_guest_builds_out_of_tree_with_the_printed_commands_and_runs() {
    let tmp = TempDir::new("new-guest");
    let out = HostCommand::new(["new", "myguest-x", "--dir", utf8(&tmp.0)]).run();
    out.assert_code(0);
    let crate_dir = tmp.path("myguest-x");
    // cargo writes the crate's `-` as `_` in the file's name.
    let module = crate_dir.join("target/wasm32-wasip2/release/myguest_x.wasm");
    let host = host_bin().canonicalize().expect("host binary path");
    assert_eq!(
        out.stdout,
        format!(
            "created the guest crate `myguest-x` in {dir}\n\
             build it, then run it on what you type (end with Ctrl-D):\n  \
             cd {dir} && cargo build --release\n  \
             {host} run --module {module} --source -\n",
            dir = crate_dir.display(),
            host = host.display(),
            module = module.display(),
        )
    );
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    for needle in [
        "name = \"myguest-x\"",
        "crate-type = [\"cdylib\"]",
        "sluice-guest = { path = \"/",
        "[profile.release]",
        "lto = true",
        "panic = \"abort\"",
        "\n[workspace]\n",
    ] {
        assert!(
            manifest.contains(needle),
            "Cargo.toml lacks {needle:?}:\n{manifest}"
        );
    }
    for file in [
        ".cargo/config.toml",
        "src/lib.rs",
        ".gitignore",
        "README.md",
    ] {
        assert!(crate_dir.join(file).is_file(), "`host new` wrote no {file}");
    }

    cargo_build_release(&crate_dir);
    assert!(module.is_file(), "the build wrote no {}", module.display());

    let run = HostCommand::new(["run", "--module", utf8(&module), "--source", "-"])
        .current_dir(&crate_dir)
        .stdin("a b a\n")
        .run();
    run.assert_code(0);
    assert_eq!(run.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    run.assert_stderr_has("job `myguest-x`");
}

#[test]
fn host_new_refuses_a_bad_name_an_occupied_directory_and_a_missing_sdk() {
    let tmp = TempDir::new("new-guest-refused");
    let dir = utf8(&tmp.0);

    let out = HostCommand::new(["new", "1guest", "--dir", dir]).run();
    out.assert_code(2);
    assert_eq!(
        out.stderr,
        "error: `1guest` is not a valid guest name: use up to 64 letters, digits, `-` and `_`, \
         starting with a letter or `_` (e.g. `my-guest`)\n"
    );
    let out = HostCommand::new(["new", "my.guest", "--dir", dir]).run();
    out.assert_code(2)
        .assert_stderr_has("`my.guest` is not a valid guest name");
    assert!(!tmp.path("1guest").exists() && !tmp.path("my.guest").exists());

    std::fs::create_dir(tmp.path("taken")).expect("mkdir");
    tmp.write("taken/notes.txt", "mine");
    let out = HostCommand::new(["new", "taken", "--dir", dir]).run();
    out.assert_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: `{}` already exists and is not an empty directory; choose another name or --dir\n",
            tmp.path("taken").display()
        )
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path("taken"))
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "the occupied directory is left alone");

    let nowhere = tmp.path("no-sdk");
    let out = HostCommand::new(["new", "fresh", "--dir", dir, "--sdk", utf8(&nowhere)]).run();
    out.assert_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: no Sluice guest SDK at `{}` (no `Cargo.toml` of `sluice-guest` there); \
             pass --sdk the `guest-sdk` directory of a Sluice checkout\n",
            nowhere.display()
        )
    );
    assert!(!tmp.path("fresh").exists());
}
