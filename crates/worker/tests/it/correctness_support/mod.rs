//! The stats correctness test's input, the answers computed from it alone, and how the
//! API's answers are read and compared with them.

pub mod answers;
pub mod dataset;
pub mod expected;
