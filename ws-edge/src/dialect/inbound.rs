//! Frames apps send up: a driver's position, in either dialect. The driver id is
//! always the token's, never the frame's.

use serde_json::Value;

use crate::route::Dialect;

/// A driver position from a frame, in WGS84 degrees (ranges are core-svc's to check).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub latitude: f64,
    pub longitude: f64,
}

/// Why an inbound frame was refused; the text goes back in an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("frames must be JSON text: {0}")]
    NotJson(String),
    #[error("frames must be JSON objects with a \"type\"")]
    NoType,
    #[error("unknown frame type {0:?}: this route accepts {1}")]
    UnknownType(String, &'static str),
    #[error("{0}")]
    BadField(String),
}

/// A number, or a string holding one (the channels dialect sends strings).
fn coordinate(v: Option<&Value>, name: &str) -> Result<f64, InboundError> {
    let n = match v {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|x| x.is_finite()).ok_or_else(|| {
        InboundError::BadField(format!("{name} must be a number or a numeric string"))
    })
}

/// Parses an inbound text frame of `dialect`.
///
/// # Errors
/// [`InboundError`] saying what is wrong and what is expected.
pub fn parse(dialect: Dialect, text: &str) -> Result<Position, InboundError> {
    let v: Value = serde_json::from_str(text).map_err(|e| InboundError::NotJson(e.to_string()))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or(InboundError::NoType)?;
    match dialect {
        Dialect::Channels(_) if kind == "location_update" => Ok(Position {
            latitude: coordinate(v.get("current_latitude"), "current_latitude")?,
            longitude: coordinate(v.get("current_longitude"), "current_longitude")?,
        }),
        Dialect::Channels(_) => Err(InboundError::UnknownType(
            kind.to_owned(),
            "\"location_update\"",
        )),
        Dialect::Logi if kind == "driver_location" => {
            let payload = v.get("payload").filter(|p| p.is_object()).ok_or_else(|| {
                InboundError::BadField("driver_location needs a \"payload\" object".into())
            })?;
            Ok(Position {
                latitude: coordinate(payload.get("latitude"), "payload.latitude")?,
                longitude: coordinate(payload.get("longitude"), "payload.longitude")?,
            })
        }
        Dialect::Logi => Err(InboundError::UnknownType(
            kind.to_owned(),
            "\"driver_location\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ChannelsRoute;

    const CHANNELS: Dialect = Dialect::Channels(ChannelsRoute::DriverAvailable);

    #[test]
    fn the_documented_frames() {
        let p = Position {
            latitude: 37.7749,
            longitude: -122.4194,
        };
        let strings = r#"{"type": "location_update", "current_latitude": "37.7749", "current_longitude": "-122.4194"}"#;
        assert_eq!(parse(CHANNELS, strings), Ok(p));
        let numbers = r#"{"type": "location_update", "current_latitude": 37.7749, "current_longitude": -122.4194}"#;
        assert_eq!(parse(CHANNELS, numbers), Ok(p));
        let logi = r#"{"type": "driver_location", "payload": {"latitude": 37.7749, "longitude": -122.4194}}"#;
        assert_eq!(parse(Dialect::Logi, logi), Ok(p));
    }

    #[test]
    fn what_is_wrong_is_said() {
        assert!(matches!(
            parse(CHANNELS, "hello"),
            Err(InboundError::NotJson(_))
        ));
        assert_eq!(parse(CHANNELS, "[1]"), Err(InboundError::NoType));
        assert_eq!(
            parse(CHANNELS, r#"{"type": "chat"}"#)
                .unwrap_err()
                .to_string(),
            "unknown frame type \"chat\": this route accepts \"location_update\""
        );
        assert_eq!(
            parse(CHANNELS, r#"{"type": "location_update", "current_latitude": "north", "current_longitude": 1}"#)
                .unwrap_err()
                .to_string(),
            "current_latitude must be a number or a numeric string"
        );
        assert!(parse(Dialect::Logi, r#"{"type": "driver_location"}"#).is_err());
        assert!(
            parse(
                Dialect::Logi,
                r#"{"type": "location_update", "current_latitude": 1, "current_longitude": 1}"#
            )
            .is_err()
        );
    }
}
