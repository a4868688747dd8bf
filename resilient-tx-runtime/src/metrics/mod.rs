//! What the runtime counts and times. [`Counters`] keep the totals behind the
//! [`Metrics`] snapshot; with the `metrics` cargo feature each event is also emitted
//! through the `metrics` facade (names and labels in [`names`]), with call, attempt,
//! connect and checkout durations. Without the feature the emitting half compiles to
//! nothing (`emit_off.rs`).

mod counters;
pub(crate) mod names;

#[cfg(feature = "metrics")]
mod emit;
#[cfg(not(feature = "metrics"))]
#[path = "emit_off.rs"]
mod emit;

pub(crate) use counters::Counters;
pub use counters::Metrics;
#[cfg(feature = "metrics")]
pub use emit::describe_metrics;
pub(crate) use emit::{CallClock, Stopwatch, checkout_ended};
#[cfg(feature = "metrics")]
pub(crate) use emit::{PoolGauges, pool_gauges};
