//! `host inspect` on a good guest.

use sluice_tests::{HostCommand, guests};

#[test]
fn inspect_shows_world_exports_imports_and_description() {
    let out = HostCommand::new(["inspect", "--module", guests::WORDCOUNT]).run();
    out.assert_code(0);
    for needle in [
        "world:    sluice:stream@0.1.0 stream-job",
        "sluice:stream/operator@0.1.0.flat-map-keyed(records: list<u8>)",
        "sluice:stream/job@0.1.0.describe(",
        "imports:\n",
        "wasi:cli/stderr@0.2",
        "  name:        wordcount\n",
        "  source:      socket://localhost:9100\n",
        "  aggregation: sum:1\n",
        "  checkpoint:  every 1000 ms\n",
        "  restart:     fixed-delay:3:10000ms\n",
    ] {
        assert!(
            out.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            out.stdout
        );
    }
}

/// The `.cwasm` files in a compile cache directory.
fn cached(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    })
}

#[test]
fn a_module_is_compiled_once_into_a_private_cache() {
    use std::os::unix::fs::PermissionsExt;
    let dir = sluice_tests::TempDir::new("compile-cache");
    let cache = dir.path("cache");
    let inspect = |extra: &[&str]| {
        let mut args = vec!["inspect", "--module", guests::WORDCOUNT];
        args.extend_from_slice(extra);
        HostCommand::new(args)
            .env("SLUICE_COMPILE_CACHE", &cache)
            .run()
    };
    let first = inspect(&[]);
    first.assert_code(0);
    assert_eq!(cached(&cache), 1, "one compiled module in the cache");
    let mode = std::fs::metadata(&cache)
        .expect("cache dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the cache is private");
    let second = inspect(&[]);
    second.assert_code(0);
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(cached(&cache), 1);

    // A cache others may write is not trusted: it is compiled afresh.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let open = inspect(&[]);
    open.assert_code(0)
        .assert_stderr_has("not using the compile cache");
    assert_eq!(open.stdout, first.stdout);

    // `off` neither reads nor writes a cache.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::remove_dir_all(&cache).expect("clear cache");
    inspect(&["--compile-cache", "off"]).assert_code(0);
    assert!(!cache.exists(), "no cache written with --compile-cache off");
}
