//! Model monitoring, computed in the host from what every request already carries.
//!
//! The pieces, in the order a sample flows through them:
//! - [`binning`]: how a feature's values are put into bins frozen from a reference sample;
//! - [`window`]: live bin counts over a sliding window, in time slots;
//! - [`divergence`]: PSI, KL divergence and Jensen–Shannon distance between two histograms;
//! - [`alarm`]: when a drift figure raises an alert and when it clears (hysteresis);
//! - [`drift`]: all of it together for one function version;
//! - [`quality`]: accuracy and friends from delayed labels.

pub mod alarm;
pub mod binning;
pub mod divergence;
pub mod drift;
pub mod quality;
pub mod window;

pub use binning::{Binning, Value};
