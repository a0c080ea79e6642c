//! Keyed state, owned by the host: key groups, and the backend that keeps
//! each key group's entries with copy-on-write snapshots for checkpoints.

pub mod key_groups;
pub mod keyed;
pub mod process_state;
pub mod store;
pub mod timers;

/// A store whose changes a batch keeps, or takes back whole when any part
/// of the batch failed (so a trap applies nothing).
pub trait Batched {
    /// Keeps the batch's changes.
    fn commit(&mut self);
    /// Takes the batch's changes back, newest first.
    fn undo(&mut self);
    /// Keeps the batch's changes when it succeeded, undoes them whole when
    /// it failed; the result as it was.
    fn settle<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(v) => {
                self.commit();
                Ok(v)
            }
            Err(e) => {
                self.undo();
                Err(e)
            }
        }
    }
}
