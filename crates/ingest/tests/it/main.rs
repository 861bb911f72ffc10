//! The gateway's integration tests, in one binary: a module per concern, against the real
//! Kafka (each test on its own topic).

mod support;

mod bad_input;
mod broker_down;
mod connections;
mod endpoints;
mod http_contract;
mod privacy;
