//! The WebSocket routes: which dialect a path speaks, which roles may use it and
//! which topics it subscribes to.

use logi::auth::{Principal, Role};
use logi::topic::Topic;

/// The channels-dialect route a connection came in on; it decides frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelsRoute {
    /// `/regular_user/ws/bookings/`
    UserBookings,
    /// `/driver/ws/available_bookings/`
    DriverAvailable,
    /// `/driver/ws/bookings/`
    DriverBookings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `spec/channels-dialect.md`, Django Channels style.
    Channels(ChannelsRoute),
    /// `spec/logi-dialect.txt`, the `{user_id, type, payload}` envelope.
    Logi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dialect: Dialect,
    /// An admin on `/ws` asked for `?fleet=1`: every driver's position too.
    pub fleet: bool,
}

/// The route of `path`, if any. The trailing slash of the channels paths is
/// optional, as Django's would redirect it.
pub fn find(path: &str) -> Option<Route> {
    let dialect = match path.trim_end_matches('/') {
        "/regular_user/ws/bookings" => Dialect::Channels(ChannelsRoute::UserBookings),
        "/driver/ws/available_bookings" => Dialect::Channels(ChannelsRoute::DriverAvailable),
        "/driver/ws/bookings" => Dialect::Channels(ChannelsRoute::DriverBookings),
        "/ws" => Dialect::Logi,
        _ => return None,
    };
    Some(Route {
        dialect,
        fleet: false,
    })
}

impl Route {
    /// Whether a token of `role` may connect here.
    pub fn admits(self, role: Role) -> bool {
        match self.dialect {
            Dialect::Channels(ChannelsRoute::UserBookings) => role == Role::User,
            Dialect::Channels(_) => role == Role::Driver,
            Dialect::Logi => matches!(role, Role::User | Role::Driver | Role::Admin),
        }
    }

    /// The roles allowed here, for the 403 message.
    pub fn roles(self) -> &'static str {
        match self.dialect {
            Dialect::Channels(ChannelsRoute::UserBookings) => "user",
            Dialect::Channels(_) => "driver",
            Dialect::Logi => "user, driver or admin",
        }
    }

    /// The topics a connection of `principal` subscribes to.
    pub fn topics(self, principal: &Principal) -> Vec<Topic> {
        let id = principal.id.clone();
        match self.dialect {
            Dialect::Channels(ChannelsRoute::UserBookings) => vec![Topic::UserBookings(id)],
            Dialect::Channels(ChannelsRoute::DriverAvailable) => {
                vec![
                    Topic::DriverAvailable(id.clone()),
                    Topic::DriverBookings(id),
                ]
            }
            Dialect::Channels(ChannelsRoute::DriverBookings) => vec![Topic::DriverBookings(id)],
            Dialect::Logi if self.fleet => {
                let mut topics = Topic::defaults_for(principal);
                topics.push(Topic::Fleet);
                topics
            }
            Dialect::Logi => Topic::defaults_for(principal),
        }
    }
}

#[cfg(test)]
mod tests {
    use logi::id::Id;

    use super::*;

    fn p(role: Role) -> Principal {
        Principal {
            id: Id::new("45").unwrap(),
            role,
            expires_at: 0,
        }
    }

    fn names(topics: Vec<Topic>) -> Vec<String> {
        topics.into_iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_design_table() {
        let user = find("/regular_user/ws/bookings/").unwrap();
        assert!(user.admits(Role::User) && !user.admits(Role::Driver) && !user.admits(Role::Admin));
        assert_eq!(names(user.topics(&p(Role::User))), ["user_45_bookings"]);
        let available = find("/driver/ws/available_bookings/").unwrap();
        assert!(available.admits(Role::Driver) && !available.admits(Role::User));
        assert_eq!(
            names(available.topics(&p(Role::Driver))),
            ["driver_45_available_bookings", "driver_45_bookings"]
        );
        let bookings = find("/driver/ws/bookings").unwrap();
        assert_eq!(
            names(bookings.topics(&p(Role::Driver))),
            ["driver_45_bookings"]
        );
        let logi = find("/ws").unwrap();
        assert!(logi.admits(Role::User) && logi.admits(Role::Driver) && logi.admits(Role::Admin));
        assert!(!logi.admits(Role::Service));
        assert_eq!(names(logi.topics(&p(Role::Admin))), ["admins"]);
        let fleet = Route {
            fleet: true,
            ..logi
        };
        assert_eq!(names(fleet.topics(&p(Role::Admin))), ["admins", "fleet"]);
        assert_eq!(
            names(logi.topics(&p(Role::Driver))),
            ["driver_45_available_bookings", "driver_45_bookings"]
        );
        assert!(find("/ws/other").is_none());
        assert!(find("/").is_none());
    }
}
