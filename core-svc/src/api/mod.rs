//! The tonic services. Each RPC authenticates (the interceptor put the token's
//! [`Principal`] in the request), converts the request to domain values
//! ([`convert`]), checks the role rules ([`access`]) and calls the domain.

pub mod access;
mod attach;
mod booking;
pub mod convert;
mod events;
mod location;
mod replay;

use std::sync::Arc;

use logi::auth::{self, Principal, Role, Verifier};
use logi::caps::Caps;
use logi::id::Id;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::cluster::Cluster;
use crate::dispatch::Dispatcher;
use crate::drivers::Registry;
use crate::error::Error;
use crate::hub::Hub;
use crate::store::Store;
use crate::tariff::Tariffs;

pub use booking::BookingApi;
pub use events::EventApi;
pub use location::LocationApi;

/// What every service shares.
pub struct Core {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    pub tariffs: Tariffs,
    /// Cancelled when the server starts shutting down; long streams end on it.
    pub shutdown: CancellationToken,
    /// Subscribe streams per principal; `service` callers (edges) are not counted.
    pub streams: Caps<(Role, Id)>,
    /// Events an edge's attachment may have waiting before it is cut off.
    pub attachment_queue: usize,
    /// The other replicas, in a cluster.
    pub cluster: Option<Arc<Cluster>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The interceptor in front of every logi service: verifies `authorization: Bearer`
/// and stores the [`Principal`] in the request's extensions.
pub fn authenticator(
    verifier: Arc<Verifier>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or(Error::Unauthenticated(auth::AuthError::Missing))?
            .to_str()
            .map_err(|_| Error::Unauthenticated(auth::AuthError::Missing))?;
        let token = auth::bearer(header).map_err(Error::from)?;
        let principal = verifier.verify(token).map_err(Error::from)?;
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// The principal the interceptor verified.
fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified token on this call"))
}
