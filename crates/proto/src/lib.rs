//! The Ultron8 wire protocol, generated from `proto/ultron8/`.
//!
//! Each protocol version is its own module so that a `v2` can be served
//! beside `v1` while drones are upgraded. [`convert`] maps between the wire
//! types and the core domain types, in one place.

pub mod v1 {
    tonic::include_proto!("ultron8.v1");
}

/// The encoded `FileDescriptorSet` of every Ultron8 protocol file, for
/// gRPC server reflection (`grpcurl` and the like discover the services
/// from it).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ultron8_descriptor.bin"));

pub mod convert;
