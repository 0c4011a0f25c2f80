//! BookingService.

use std::sync::Arc;

use logi::auth::Role;
use logi::pb::{self, booking_service_server::BookingService};
use tonic::{Request, Response, Status};

use super::{Core, access, convert, principal};
use crate::error::Error;
use crate::geo;
use crate::model::{Booking, BookingStatus, Canceller, NewBooking, RequestKey};
use crate::otp;
use crate::store::BookingQuery;
use crate::tariff::Tariffs;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct BookingApi(pub Arc<Core>);

impl BookingApi {
    /// A booking the principal may see, with the OTP if it may see that too.
    async fn visible(&self, p: &logi::auth::Principal, id: u64) -> Result<pb::Booking, Error> {
        let booking = self.0.store.booking(id).await?;
        let allowed = match p.role {
            Role::Admin | Role::Service => true,
            Role::User => booking.user_id == p.id,
            Role::Driver => {
                booking.driver_id.as_ref() == Some(&p.id)
                    || self.0.store.offered_to(id, p.id.clone()).await?
            }
        };
        if !allowed {
            // Same answer as a missing booking: ids are not a way to probe others' trips.
            return Err(Error::BookingNotFound(id));
        }
        Ok(booking.to_pb(access::sees_otp(p, &booking)))
    }
}

impl BookingApi {
    /// A driver token acts only on bookings it is part of (offered to it, when
    /// `offered_is_enough`, or accepted by it); others answer NOT_FOUND, exactly as
    /// for a booking that does not exist, so errors do not reveal others' trips.
    async fn driver_takes_part(
        &self,
        p: &logi::auth::Principal,
        id: u64,
        offered_is_enough: bool,
    ) -> Result<(), Error> {
        if p.role != Role::Driver {
            return Ok(());
        }
        let booking = self.0.store.booking(id).await?;
        let accepted_by_it = booking.driver_id.as_ref() == Some(&p.id);
        if accepted_by_it
            || (offered_is_enough && self.0.store.offered_to(id, p.id.clone()).await?)
        {
            Ok(())
        } else {
            Err(Error::BookingNotFound(id))
        }
    }
}

impl BookingApi {
    /// The booking and driver of a driver's action (accept, verify, complete): a
    /// driver token acts only as itself (an empty driver_id means itself) and only on
    /// bookings it takes part in.
    async fn acting_driver(
        &self,
        p: &logi::auth::Principal,
        booking_id: u64,
        driver_id: &str,
        offered_is_enough: bool,
    ) -> Result<(u64, logi::id::Id), Error> {
        let id = convert::booking_id(booking_id)?;
        let driver = convert::id("driver_id", &access::default_id(p, Role::Driver, driver_id))?;
        access::as_driver(p, &driver)?;
        self.driver_takes_part(p, id, offered_is_enough).await?;
        Ok((id, driver))
    }
}

/// The answer to a change: never with the OTP, which only GetBooking, ListBookings
/// and IssueOtp return (to the rider, services and admins), so that no relay of an
/// accept can hand it to the driver.
fn reply(b: &Booking) -> Response<pb::Booking> {
    Response::new(b.to_pb(false))
}

#[tonic::async_trait]
impl BookingService for BookingApi {
    async fn create_booking(
        &self,
        req: Request<pb::CreateBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let user_id = convert::id("user_id", &access::default_id(&p, Role::User, &r.user_id))?;
        access::as_user(&p, &user_id)?;
        let pickup = convert::place("pickup", r.pickup)?;
        let dropoff = convert::place("dropoff", r.dropoff)?;
        let tariff = convert::vehicle_type(&self.0.tariffs, &r.vehicle_type)?;
        let distance_m = geo::distance_m(pickup.point, dropoff.point);
        let request = convert::request_id(r.request_id)?.map(|request_id| RequestKey {
            principal: format!("{}:{}", p.role.as_str(), p.id),
            request_id,
        });
        let new = NewBooking {
            user_id,
            price_estimate: Tariffs::price(tariff, distance_m),
            distance_m,
            vehicle_type: r.vehicle_type,
            phone_number: convert::phone(r.phone_number)?,
            pickup,
            dropoff,
            request,
        };
        let offers = self
            .0
            .dispatcher
            .initial_offers(new.pickup.point, &new.vehicle_type);
        let booking = self.0.store.create_booking(new, offers.clone()).await?;
        tracing::info!(
            booking = booking.id,
            "booking created, or a repeated request answered"
        );
        Ok(reply(&booking))
    }

    async fn get_booking(
        &self,
        req: Request<pb::GetBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let id = convert::booking_id(req.get_ref().booking_id)?;
        Ok(Response::new(self.visible(&p, id).await?))
    }

    async fn list_bookings(
        &self,
        req: Request<pb::ListBookingsRequest>,
    ) -> Result<Response<pb::ListBookingsResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let user_id = access::default_id(&p, Role::User, &r.user_id);
        let driver_id = access::default_id(&p, Role::Driver, &r.driver_id);
        let user_id = (!user_id.is_empty())
            .then(|| convert::id("user_id", &user_id))
            .transpose()?;
        let driver_id = (!driver_id.is_empty())
            .then(|| convert::id("driver_id", &driver_id))
            .transpose()?;
        match p.role {
            Role::User => access::as_user(&p, user_id.as_ref().expect("defaulted to the token"))?,
            Role::Driver => {
                access::as_driver(&p, driver_id.as_ref().expect("defaulted to the token"))?
            }
            Role::Admin | Role::Service => {}
        }
        let status = pb::BookingStatus::try_from(r.status)
            .map_err(|_| Error::invalid(format!("status {} is not a BookingStatus", r.status)))?;
        let mut statuses: Vec<BookingStatus> = BookingStatus::from_pb(status).into_iter().collect();
        if r.active {
            let active = [
                BookingStatus::Pending,
                BookingStatus::Accepted,
                BookingStatus::OnTrip,
            ];
            statuses = if statuses.is_empty() {
                active.to_vec()
            } else {
                statuses.into_iter().filter(|s| s.is_active()).collect()
            };
            if statuses.is_empty() {
                return Ok(Response::new(pb::ListBookingsResponse::default()));
            }
        }
        if r.page_size > MAX_PAGE {
            return Err(Error::invalid(format!("page_size must be at most {MAX_PAGE}")).into());
        }
        let limit = if r.page_size == 0 {
            DEFAULT_PAGE
        } else {
            r.page_size
        } as usize;
        let before = match r.page_token.as_str() {
            "" => None,
            t => Some(t.parse::<u64>().map_err(|_| {
                Error::invalid("page_token is not one this server gave out: pass next_page_token back unchanged")
            })?),
        };
        let (bookings, next) = self
            .0
            .store
            .bookings(BookingQuery {
                user_id,
                driver_id,
                statuses,
                before,
                limit,
            })
            .await?;
        Ok(Response::new(pb::ListBookingsResponse {
            bookings: bookings
                .iter()
                .map(|b| b.to_pb(access::sees_otp(&p, b)))
                .collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn accept_booking(
        &self,
        req: Request<pb::AcceptBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let (id, driver) = self
            .acting_driver(&p, r.booking_id, &r.driver_id, true)
            .await?;
        let booking = self.0.store.accept(id, driver.clone()).await?;
        tracing::info!(booking = id, %driver, "booking accepted");
        Ok(reply(&booking))
    }

    async fn verify_otp(
        &self,
        req: Request<pb::VerifyOtpRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        if !otp::well_formed(&r.otp) {
            return Err(Error::invalid("otp must be exactly 6 digits").into());
        }
        let (id, driver) = self
            .acting_driver(&p, r.booking_id, &r.driver_id, false)
            .await?;
        let booking = match self.0.store.verify_otp(id, driver.clone(), r.otp).await {
            Ok(booking) => booking,
            Err(e) => {
                if let Error::WrongOtp { left, .. } = e {
                    self.0.metrics.wrong_otp(left == 0);
                }
                return Err(e.into());
            }
        };
        tracing::info!(booking = id, %driver, "trip started");
        Ok(reply(&booking))
    }

    async fn issue_otp(
        &self,
        req: Request<pb::IssueOtpRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let id = convert::booking_id(req.get_ref().booking_id)?;
        if p.role == Role::Driver {
            return Err(Error::denied(
                "a driver token may not issue OTPs: the rider asks for a new one",
            )
            .into());
        }
        let current = self.0.store.booking(id).await?;
        access::as_user(&p, &current.user_id).map_err(|_| Error::BookingNotFound(id))?;
        let booking = self.0.store.issue_otp(id).await?;
        Ok(Response::new(booking.to_pb(access::sees_otp(&p, &booking))))
    }

    async fn complete_trip(
        &self,
        req: Request<pb::CompleteTripRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let (id, driver) = self
            .acting_driver(&p, r.booking_id, &r.driver_id, false)
            .await?;
        let booking = self.0.store.complete(id, driver.clone()).await?;
        tracing::info!(booking = id, %driver, "trip completed");
        Ok(reply(&booking))
    }

    async fn cancel_booking(
        &self,
        req: Request<pb::CancelBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let id = convert::booking_id(r.booking_id)?;
        let by = match pb::Canceller::try_from(r.cancelled_by) {
            Ok(pb::Canceller::User) => Canceller::User,
            Ok(pb::Canceller::Driver) => Canceller::Driver,
            _ => {
                return Err(Error::invalid(
                    "cancelled_by is required: CANCELLER_USER or CANCELLER_DRIVER",
                )
                .into());
            }
        };
        let reason = convert::text("reason", r.reason)?;
        let acting_driver = match (p.role, by) {
            (Role::User, Canceller::User) => {
                let current = self.0.store.booking(id).await?;
                access::as_user(&p, &current.user_id).map_err(|_| Error::BookingNotFound(id))?;
                None
            }
            (Role::Driver, Canceller::Driver) => {
                self.driver_takes_part(&p, id, false).await?;
                Some(p.id.clone())
            }
            (Role::User | Role::Driver, _) => {
                return Err(Error::denied(format!(
                    "a {} token may cancel only as CANCELLER_{}",
                    p.role.as_str(),
                    p.role.as_str().to_uppercase()
                ))
                .into());
            }
            (Role::Admin | Role::Service, _) => None,
        };
        let booking = self.0.store.cancel(id, by, acting_driver, reason).await?;
        tracing::info!(booking = id, by = by.as_str(), "booking cancelled");
        Ok(reply(&booking))
    }
}
