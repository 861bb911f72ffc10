//! The model's property tests, in one binary.

mod parsing_properties;
mod stored_fields_fit;
