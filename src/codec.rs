//! The protobuf codec of every Logi gRPC service: prost, with small buffers.
//!
//! tonic gives every call an encode buffer on the sending side and a decode buffer
//! on the receiving side, 8 KiB each by default, kept for the life of the call. A
//! ws-edge holds one `Subscribe` stream per connected app, so with the default those
//! two buffers alone would cost 16 KiB per app across the two processes. Our
//! messages are a few hundred bytes: buffers start at [`BUFFER_SIZE`] (an idle
//! stream only ever carries its start markers) and grow when a message, or a batch
//! of messages ready together, needs more.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size, and growth step, of a call's encode and decode buffers.
pub const BUFFER_SIZE: usize = 256;
/// Bytes of ready messages batched into one write on a stream (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with [`BUFFER_SIZE`] buffers; the generated clients
/// and servers use it (see `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
