//! Dev-only helpers shared by the workspace's tests (a dev-dependency, never a dependency).
//!
//! libtorch has one global random generator and one global intra-op thread count per
//! process, and `cargo test` runs the tests of a binary on parallel threads. A test that
//! seeds the generator and draws from it (building a model, random scores, random data)
//! gets other numbers when another test draws in between, and a test that changes the
//! thread count changes another's floating-point results. Every test that seeds, draws from
//! or reconfigures libtorch's global state holds [`torch_lock`] for its whole body, so such
//! tests run one at a time within their binary while the rest still run in parallel.
//!
//! [`prereq`]: what a test does when a data set or a program it needs is missing here
//! (fail, or say `SKIPPED` and why — never pass silently), and the `AP_REQUIRE_*`
//! switches that decide.
//!
//! [`fixtures`]: specs, grids and training configurations as `toml::Value`s edited by path;
//! [`tensors`]: small seeded parameter sets, masks and toy data; [`devices()`]: the devices a
//! device-parametrized test runs on (`AP_TEST_DEVICES`).

use std::sync::{Mutex, MutexGuard};

pub mod devices;
pub mod fixtures;
pub mod prereq;
pub mod tensors;
pub use devices::devices;
pub use fixtures::TomlExt;
pub use prereq::{missing_prerequisite, WhenUnset};

static TORCH: Mutex<()> = Mutex::new(());

/// Holds libtorch's global state (generator, thread count) for the caller until the guard
/// drops. A test that failed while holding it does not poison it for the others.
pub fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two threads never hold the lock at once, and a panic while holding it does not
    /// stop the next holder.
    #[test]
    fn the_lock_is_exclusive_and_survives_a_panic() {
        static INSIDE: AtomicUsize = AtomicUsize::new(0);
        let _ = std::thread::spawn(|| {
            let _g = torch_lock();
            panic!("a failing test");
        })
        .join();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200 {
                        let _g = torch_lock();
                        assert_eq!(INSIDE.fetch_add(1, Ordering::SeqCst), 0);
                        std::hint::spin_loop();
                        INSIDE.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
