//! The Ultron8 wire protocol, generated from `proto/ultron8/`.
//!
//! Each protocol version is its own module so that a `v2` can be served
//! beside `v1` while drones are upgraded. [`convert`] maps between the wire
//! types and the core domain types, in one place.

pub mod v1 {
    tonic::include_proto!("ultron8.v1");
}

pub mod convert;
