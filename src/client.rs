//! gRPC clients that carry a bearer token, for tools and tests.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::pb::{
    booking_service_client::BookingServiceClient, event_service_client::EventServiceClient,
    location_service_client::LocationServiceClient,
};

/// Adds `authorization: Bearer <token>` to every call (or nothing, for `None`).
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// # Errors
    /// When the header value is not valid ASCII.
    pub fn header(value: Option<&str>) -> Result<Self, Status> {
        value
            .map(|v| {
                v.parse()
                    .map_err(|_| Status::invalid_argument("the token is not a valid header value"))
            })
            .transpose()
            .map(Self)
    }

    /// # Errors
    /// When the token is not valid ASCII.
    pub fn token(token: &str) -> Result<Self, Status> {
        Self::header(Some(&format!("Bearer {token}")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// The three logi services over one channel, calling with one credential.
#[derive(Clone)]
pub struct Clients {
    pub bookings: BookingServiceClient<Authed>,
    pub locations: LocationServiceClient<Authed>,
    pub events: EventServiceClient<Authed>,
}

impl Clients {
    pub fn new(channel: Channel, bearer: Bearer) -> Self {
        Self {
            bookings: BookingServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            locations: LocationServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            events: EventServiceClient::with_interceptor(channel, bearer),
        }
    }
}
