//! End-to-end tests: the real `host` binary on guests compiled from
//! `examples/` and `tests/guests/`, over loopback sockets, files and stdin.

mod bad_input;
mod first_hour;
mod inspect;
mod kafka;
mod kafka_pipeline;
mod kafka_security;
mod languages;
mod new_guest;
mod pipeline;
mod poison;
mod recovery;
mod s3;
mod sandbox;
mod serve;
mod wordcount;
