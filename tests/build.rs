//! Builds every guest the end-to-end tests run (the examples and the test
//! guests under `tests/guests/`) for `wasm32-wasip2`, in a target directory
//! of their own, and writes their paths as constants into `guests.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (crate name, constant name) of every guest the tests use.
const GUESTS: &[(&str, &str)] = &[
    ("wordcount", "WORDCOUNT"),
    ("guest-other-world", "OTHER_WORLD"),
    ("guest-old-version", "OLD_VERSION"),
    ("guest-missing-export", "MISSING_EXPORT"),
    ("guest-hostile", "HOSTILE"),
    ("guest-file-reader", "FILE_READER"),
    ("guest-env-reader", "ENV_READER"),
    ("guest-start-trap", "START_TRAP"),
    ("guest-raw", "RAW"),
    ("fraud", "FRAUD"),
    ("windowed-wordcount", "WINDOWED_WORDCOUNT"),
];

/// The examples written in every language: (example, Rust guest constant,
/// list constant).
const EXAMPLES: &[(&str, &str, &str)] = &[
    ("wordcount", "WORDCOUNT", "WORDCOUNTS"),
    ("fraud", "FRAUD", "FRAUDS"),
    (
        "windowed-wordcount",
        "WINDOWED_WORDCOUNT",
        "WINDOWED_WORDCOUNTS",
    ),
];

/// The languages besides Rust each example is written in.
const LANGUAGES: &[&str] = &["python", "js", "c"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    for dir in ["wit", "guest-sdk", "examples", "tests/guests"] {
        rerun_under(&root.join(dir));
    }
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir);
    for (name, _) in GUESTS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy's, coverage's) are not
    // for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir);
    let status = cmd
        .status()
        .expect("cannot run cargo to build the test guests");
    if !status.success() {
        panic!(
            "building the test guests failed; if the wasm32-wasip2 target is missing, \
             run `rustup target add wasm32-wasip2`"
        );
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    let mut consts = String::new();
    for (name, constant) in GUESTS {
        let file = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            file.exists(),
            "guest `{name}` was not built at {}",
            file.display()
        );
        consts.push_str(&format!(
            "/// The `{name}` guest component.\npub const {constant}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    // The examples in other languages are built by each one's own `build`
    // script (`scripts/test` runs them first) into `target/guests`.
    for (example, rust, list) in EXAMPLES {
        let mut all = format!("(\"rust\", {rust}), ");
        for language in LANGUAGES {
            let name = format!("{example}-{language}");
            let constant = name.replace('-', "_").to_uppercase();
            let file = target_dir.join(format!("{name}.wasm"));
            consts.push_str(&format!(
                "/// `{name}`, built by `examples/{name}/build`.\npub const {constant}: &str = {:?};\n",
                file.display().to_string()
            ));
            all.push_str(&format!("({language:?}, {constant}), "));
        }
        consts.push_str(&format!(
            "/// The `{example}` guests: (language, path).\npub const {list}: &[(&str, &str)] = &[{all}];\n"
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, consts).expect("cannot write guests.rs");
}

fn rerun_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == "node_modules" || n == "build")
        {
            continue;
        }
        if path.is_dir() {
            rerun_under(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
