//! `host new NAME`: creates a Rust guest crate of one's own that builds out
//! of tree with one command (`cargo build --release`): a `cdylib` on the
//! `sluice-guest` SDK by path, the guest profile as its release profile,
//! `wasm32-wasip2` as its default target and a small wordcount to start
//! from. It writes files only; it builds and runs nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Args;

#[derive(Args)]
pub struct NewArgs {
    /// The crate's name: letters, digits, `-` and `_`, starting with a letter or `_`.
    name: String,
    /// The directory to create the crate in, as DIR/NAME.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// The `guest-sdk` directory of a Sluice checkout [default: the one this host was built from].
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// The SDK of the checkout this host was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// The toolchain the SDK is built and tested with, and its wasm target.
const TOOLCHAIN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../rust-toolchain.toml"
));

/// The longest name: crates.io's limit.
const MAX_NAME_CHARS: usize = 64;

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let sdk = find_sdk(args.sdk.as_deref())?;
    let crate_dir = std::path::absolute(args.dir.join(&args.name))
        .with_context(|| format!("cannot find `{}`", args.dir.display()))?;
    check_free(&crate_dir)?;
    let files = files(&args.name, &sdk)?;
    for (path, contents) in &files {
        let path = crate_dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let module = crate_dir.join(module_path(&args.name));
    out!(
        "created the guest crate `{}` in {}",
        args.name,
        shell_word(&crate_dir)
    );
    out!("build it, then run it on what you type (end with Ctrl-D):");
    out!("  cd {} && cargo build --release", shell_word(&crate_dir));
    out!(
        "  {} run --module {} --source -",
        host_command(),
        shell_word(&module)
    );
    Ok(ExitCode::SUCCESS)
}

/// A crate name cargo accepts, that is not the SDK's own.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !starts_well || !rest_ok || name.chars().count() > MAX_NAME_CHARS {
        bail!(
            "`{name}` is not a valid guest name: use up to {MAX_NAME_CHARS} letters, digits, `-` and `_`, \
             starting with a letter or `_` (e.g. `my-guest`)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("`{name}` cannot be a crate's name (Rust reserves it); choose another");
    }
    if name.replace('-', "_") == "sluice_guest" {
        bail!("`{name}` is the SDK's own name; choose another");
    }
    Ok(())
}

/// Names cargo refuses for a package: Rust's keywords and the standard
/// library's crates.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
];

/// The SDK directory, absolute, with `sluice-guest`'s manifest in it.
fn find_sdk(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (dir, hint) = match flag {
        Some(dir) => (
            dir.to_owned(),
            "pass --sdk the `guest-sdk` directory of a Sluice checkout",
        ),
        None => (
            PathBuf::from(BUILT_FROM_SDK),
            "this host was built from a checkout that is no longer there; \
             pass --sdk the `guest-sdk` directory of a Sluice checkout",
        ),
    };
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if !manifest
        .lines()
        .any(|l| l.trim() == r#"name = "sluice-guest""#)
    {
        bail!(
            "no Sluice guest SDK at `{}` (no `Cargo.toml` of `sluice-guest` there); {hint}",
            dir.display()
        );
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot find `{}`", dir.display()))?;
    if dir.to_str().is_none() {
        bail!(
            "the SDK's path `{}` is not valid UTF-8, which Cargo.toml cannot hold; \
             move the checkout or pass --sdk another path",
            dir.display()
        );
    }
    Ok(dir)
}

/// Refuses a path that is a file or a directory with anything in it.
fn check_free(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = dir.is_dir()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read `{}`", dir.display()))?
            .next()
            .is_none();
    if !empty {
        bail!(
            "`{}` already exists and is not an empty directory; choose another name or --dir",
            dir.display()
        );
    }
    Ok(())
}

/// Where `cargo build --release` writes the component, in the crate:
/// cargo turns the `-` of a name into `_` in the file's name.
fn module_path(name: &str) -> PathBuf {
    Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")))
}

/// The files of the crate: (path in the crate, contents).
fn files(name: &str, sdk: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let sdk = sdk
        .to_str()
        .ok_or_else(|| anyhow!("the SDK's path `{}` is not valid UTF-8", sdk.display()))?;
    // A TOML string: quoted and escaped.
    let sdk = toml::Value::String(sdk.to_owned()).to_string();
    let module = module_path(name).display().to_string();
    let fill = |template: &str| {
        template
            .replace("@NAME@", name)
            .replace("@SDK@", &sdk)
            .replace("@MODULE@", &module)
    };
    Ok(vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        ("rust-toolchain.toml", TOOLCHAIN.to_owned()),
        ("src/lib.rs", fill(LIB_RS)),
        (".gitignore", GITIGNORE.to_owned()),
        ("README.md", fill(README)),
    ])
}

/// How to call this host in the printed commands: as it was called when
/// that was by name (it is on the PATH), else by its absolute path, which
/// works from any directory.
fn host_command() -> String {
    let called = std::env::args_os().next().unwrap_or_default();
    if !called.is_empty() && !Path::new(&called).to_string_lossy().contains('/') {
        return called.to_string_lossy().into_owned();
    }
    std::env::current_exe()
        .map(|exe| shell_word(&exe))
        .unwrap_or_else(|_| "host".to_owned())
}

/// A path as one shell word: as is when it needs no quoting, else in
/// single quotes.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

const CARGO_TOML: &str = r#"[package]
name = "@NAME@"
version = "0.1.0"
edition = "2024"
publish = false

# A guest is a dynamic library: cargo builds it as a WebAssembly component.
[lib]
crate-type = ["cdylib"]

[dependencies]
# The Sluice guest SDK, by path: edit the path when the checkout moves.
sluice-guest = { path = @SDK@ }

# The guest settings: small and fast (LTO, stripped, one codegen unit); a
# panic aborts the instance, and the host answers with its restart strategy.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
debug = false

# Its own workspace, even when created inside another one's directory.
[workspace]
"#;

/// The build, and what `host run` in the crate's directory leaves there.
const GITIGNORE: &str = "/target\n/sluice-checkpoints\n";

const CARGO_CONFIG: &str = r#"# Guests are WebAssembly components: `cargo build` builds for wasm32-wasip2.
[build]
target = "wasm32-wasip2"
"#;

const LIB_RS: &str = r#"//! `@NAME@`: a Sluice guest. The host reads lines from the source and
//! calls `flat_map` for each; every row it emits is keyed by `key`, and the
//! host keeps the keyed state (here a running sum of field 1) and prints
//! each update: the input `a b a` prints `(a,1)`, `(b,1)`, `(a,2)`.

use sluice_guest::{Collector, JobDescription, Params, Row, Value};

/// Called once per input line: emits `(word, 1)` for every word. Return a
/// `Result<(), E: Display>` instead to fail a record with a message, or
/// panic to fail the task (the host then restarts it as the job says).
fn flat_map(line: &str, out: &mut Collector) {
    for word in line.split_whitespace() {
        out.emit((word, 1));
    }
}

/// The key of a row: the word (field 0). Rows with the same key share
/// their state, and the same key always goes to the same subtask.
fn key(row: &Row) -> Value<'_> {
    row.field(0)
}

/// Optional: the job's defaults, like a Flink `main()`; `host run` flags
/// (`--source`, `--aggregate`, `--checkpoint-interval`, ...) and
/// `--param KEY=VALUE`, read here with `params.get("KEY")`, override them.
fn describe(_params: &Params) -> JobDescription {
    JobDescription::new("@NAME@")
        // Read standard input; `socket://HOST:PORT` or `file://PATH` also work.
        .source("-")
        // Keep a running sum of field 1 per key.
        .sum(1)
}

sluice_guest::export!(flat_map, key, describe = describe);
"#;

const README: &str = r#"# @NAME@

A Sluice guest: a stream function in Rust, compiled to a WebAssembly
component that the Sluice host runs. Created by `host new @NAME@`.

## Build

```sh
cargo build --release
```

This writes `@MODULE@` (cargo writes a `-` in the crate's name as `_` in
the file's name). `.cargo/config.toml` makes `wasm32-wasip2` the default
target, `rust-toolchain.toml` names the toolchain the SDK is built with and
adds the target, and `[profile.release]` in `Cargo.toml` holds the guest
settings (LTO, stripped, `panic = "abort"`).

## Run

With the Sluice host (`target/release/host` in the Sluice checkout, after
`cargo build --release -p sluice-host` there):

```sh
printf 'a b a\n' | host run --module @MODULE@ --source -
```

prints `(a,1)`, `(b,1)`, `(a,2)`. Run from a terminal, it reads what you
type (end with Ctrl-D). `host inspect --module @MODULE@` shows what the
component exports and the job it describes.

## Change it

`src/lib.rs` holds the functions: `flat_map` (one input line to any number
of rows), `key` (the key of a row) and `describe` (the job's defaults). The
SDK's API is in the Sluice README, "Writing a guest in Rust", and in its
crate docs: `cargo doc --open -p sluice-guest`.

The SDK is a path dependency on a Sluice checkout (`Cargo.toml`): when the
checkout moves, edit the path.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cargo_accepts_pass_and_others_are_refused() {
        for ok in [
            "wordcount",
            "my-guest",
            "my_guest",
            "_private",
            "g2",
            "A-b_9",
        ] {
            assert!(check_name(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "9lives",
            "-guest",
            "my.guest",
            "a/b",
            "naïve",
            "with space",
        ] {
            let e = check_name(bad).expect_err(bad).to_string();
            assert!(e.contains("is not a valid guest name"), "{bad}: {e}");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check_name(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
        for reserved in ["fn", "self", "test", "std"] {
            let e = check_name(reserved).expect_err(reserved).to_string();
            assert!(e.contains("Rust reserves it"), "{reserved}: {e}");
        }
        assert!(check_name("sluice-guest").is_err());
    }

    #[test]
    fn the_module_path_writes_hyphens_as_underscores() {
        assert_eq!(
            module_path("guest-file-reader"),
            Path::new("target/wasm32-wasip2/release/guest_file_reader.wasm")
        );
    }

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_word(Path::new("/tmp/my-guest")), "/tmp/my-guest");
        assert_eq!(shell_word(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(shell_word(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }

    #[test]
    fn the_sdk_path_is_a_quoted_toml_string() {
        let files = files("g", Path::new(r#"/x/a "b"\c"#)).expect("files");
        let (_, manifest) = files
            .iter()
            .find(|(p, _)| *p == "Cargo.toml")
            .expect("a Cargo.toml");
        let parsed: toml::Table = manifest.parse().expect("valid TOML");
        assert_eq!(
            parsed["dependencies"]["sluice-guest"]["path"].as_str(),
            Some(r#"/x/a "b"\c"#)
        );
        assert_eq!(parsed["package"]["name"].as_str(), Some("g"));
    }
}
