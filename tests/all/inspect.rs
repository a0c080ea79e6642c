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
