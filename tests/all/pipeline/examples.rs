//! The 0.2.0 examples that show one feature each: the top words of every
//! window (two keyed stages, re-keyed in between) and sessions per user
//! (session windows that late clicks merge), with their exact output.

use sluice_tests::{TempDir, guests};

use super::{file_uri, fraud_file_job, kill_and_restore, over_socket_gap, sorted, windowed};

/// `timestamp words...` lines over three windows of 10 s, with a tie in the
/// second and a line without a timestamp.
const WORDS: &str = "\
1000 a b a c
2000 b a d
9000 c c c
no timestamp here
10500 x y x
12000 x a
25000 z
";

const TOP_3: &str = "\
(0,10000,1,c,4)
(0,10000,2,a,3)
(0,10000,3,b,2)
(10000,20000,1,x,3)
(10000,20000,2,a,1)
(10000,20000,3,y,1)
(20000,30000,1,z,1)
";

/// `windowed` at parallelism `p`.
fn windowed_at(module: &str, input: &str, p: &str) -> sluice_tests::Output {
    let dir = TempDir::new("windows");
    let path = dir.write("in.txt", input);
    let ckpt = dir.0.to_str().expect("utf8 path");
    let out = sluice_tests::HostCommand::job(
        module,
        &file_uri(&path),
        &["--checkpoint-dir", ckpt, "--parallelism", p],
    )
    .timeout(std::time::Duration::from_secs(60))
    .run();
    out.assert_code(0);
    out
}

/// Each window's counts (keyed by word) reach the `top` stage (keyed by
/// window) on whichever subtask holds the window, and its top 3 is emitted
/// once the watermark passes it, at any parallelism.
#[test]
fn top_words_of_every_window() {
    let module = guests::TOP_WORDS;
    let out = windowed(module, WORDS, &[]);
    assert_eq!(
        out.stdout,
        format!("malformed> (no timestamp here)\n{TOP_3}"),
        "stderr:\n{}",
        out.stderr
    );
    let out = windowed(module, WORDS, &["top=1", "size=20000"]);
    assert_eq!(
        out.stdout,
        "malformed> (no timestamp here)\n(0,20000,1,a,4)\n(20000,40000,1,z,1)\n"
    );
    for p in ["2", "3"] {
        let out = windowed_at(module, WORDS, p);
        let mut expected = sorted(TOP_3);
        expected.push("malformed> (no timestamp here)");
        expected.sort_unstable();
        assert_eq!(sorted(&out.stdout), expected, "parallelism {p}");
    }
}

/// The two keyed stages' state (open windows by word, collected counts by
/// window) survives `kill -9` and a restore at another parallelism.
#[test]
fn top_words_after_kill_and_restore() {
    let dir = TempDir::new("top-kill");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::new();
    for i in 0..200_000u64 {
        text.push_str(&(i * 2).to_string());
        for _ in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!(" w{}", x % 500));
        }
        text.push('\n');
    }
    let input = dir.write("in.txt", text);
    kill_and_restore(&dir, |sink, ckpt, p, extra| {
        let mut all = vec!["--param", "size=1000"];
        all.extend_from_slice(extra);
        fraud_file_job(guests::TOP_WORDS, &input, sink, ckpt, p, &all)
    });
}

/// Clicks of two users: alice's first two within the gap, bob's within it,
/// alice again much later; a line that does not parse.
const CLICKS: &str = "\
alice,1000,view
alice,2000,buy
bob,1500,view
alice,5000000,view
bob,1600,buy
bad line
";

fn sessions_of_two_users(module: &str) {
    let out = windowed(module, CLICKS, &[]);
    assert_eq!(
        out.stdout,
        "malformed> (bad line)\n(bob,1500,1801600,2,1)\n(alice,1000,1802000,2,1)\n(alice,5000000,6800000,1,0)\n",
        "stderr:\n{}",
        out.stderr
    );
    // A gap of half a second: alice's two clicks are sessions of their own.
    let out = windowed(module, CLICKS, &["gap=500"]);
    assert_eq!(
        out.stdout,
        "malformed> (bad line)\n(alice,1000,1500,1,0)\n(bob,1500,2100,2,1)\n(alice,2000,2500,1,1)\n(alice,5000000,5000500,1,0)\n"
    );
}

#[test]
fn sessions_per_user_rust() {
    sessions_of_two_users(guests::SESSIONS);
}

#[test]
fn sessions_per_user_python() {
    sessions_of_two_users(guests::SESSIONS_PYTHON);
}

/// A late click within the allowed lateness bridges two sessions that
/// already fired: they merge and the session is emitted again; a click
/// of another user later than that goes to `late`.
#[test]
fn a_late_click_merges_sessions() {
    for module in [guests::SESSIONS, guests::SESSIONS_PYTHON] {
        // Each line must be a batch of its own (the watermark moves between
        // batches): a whole second apart, so that a host slowed by a busy
        // machine still reads them one by one.
        let out = over_socket_gap(
            module,
            &[
                "u,1000,view\n",
                "u,3000,buy\n",
                "v,20000,view\n",
                "u,2000,view\n",
                "w,500,view\n",
                "v,90000,view\n",
            ],
            &["gap=1000", "lateness=18500"],
            5,
            std::time::Duration::from_secs(1),
        );
        assert_eq!(
            out.stdout,
            "(u,1000,2000,1,0)\n(u,3000,4000,1,1)\n(u,1000,4000,3,1)\nlate> (w,false)\n(v,20000,21000,1,0)\n",
            "{module}; stderr:\n{}",
            out.stderr
        );
    }
}
