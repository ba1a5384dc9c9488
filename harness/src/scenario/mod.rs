//! Scenario files: the format and its loader.

pub mod load;
pub mod model;

pub use load::{LoadError, discover, load};
pub use model::Scenario;
