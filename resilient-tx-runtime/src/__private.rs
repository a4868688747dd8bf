//! What `#[retriable_tx]`'s generated code uses. Not a public API: the facade re-exports
//! it as `resilient_tx::__private`, hidden from docs.

pub use crate::call::Call;
pub use crate::idempotency::{Begin, Fingerprint, FingerprintArg, SerializedArg, UnserializedArg};
pub use crate::policy::{CallOptions, Isolation};
pub use crate::shared::DbRef;
pub use core::time::Duration;

/// A by-value parameter of a `#[retriable_tx]` function is cloned for every attempt.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` to be passed by value to a #[retriable_tx] function",
    label = "this parameter is cloned for each attempt, because the body may run more than once",
    note = "derive or implement `Clone` for `{Self}`, or take the parameter by reference"
)]
pub trait AttemptClone {
    /// The copy handed to one attempt.
    fn attempt_clone(&self) -> Self;
}

impl<T: Clone> AttemptClone for T {
    fn attempt_clone(&self) -> Self {
        self.clone()
    }
}
