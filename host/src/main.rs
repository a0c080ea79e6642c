//! The `host` command: parses flags, runs a subcommand, maps the result to
//! an exit code (0 finished or cancelled, 1 job failed, 2 bad usage or bad
//! input) and prints an error once, without a backtrace.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    steady_heap();
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Keeps glibc's heap from shrinking and growing with every batch: by
/// default it returns freed memory to the kernel and moves its mmap
/// threshold as blocks come and go, so a batch's buffers (megabytes,
/// allocated on one thread and freed on another) fault their pages in
/// again and again. Fixed thresholds keep them mapped; peak RSS is
/// unchanged, since the same buffers are reused.
fn steady_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
