//! Movement: the area the fleet works in, random places in it, and routes along
//! streets (a leg north–south, then one east–west, like a city grid) that a
//! vehicle advances along at its speed.
//!
//! Distances are metres on a local flat projection around the centre: exact
//! enough within the few kilometres of a simulated city.

use rand::Rng;

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_320.0;

/// A point, in WGS84 degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// The disc the fleet drives and the riders book in.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub center: Point,
    pub radius_m: f64,
}

impl Area {
    fn m_per_deg_lon(&self) -> f64 {
        M_PER_DEG * self.center.lat.to_radians().cos()
    }

    /// `p` moved `east` and `north` metres.
    pub fn offset(&self, p: Point, east: f64, north: f64) -> Point {
        Point {
            lat: p.lat + north / M_PER_DEG,
            lon: p.lon + east / self.m_per_deg_lon(),
        }
    }

    /// Where `p` is from the centre: metres east and north.
    fn local(&self, p: Point) -> (f64, f64) {
        (
            (p.lon - self.center.lon) * self.m_per_deg_lon(),
            (p.lat - self.center.lat) * M_PER_DEG,
        )
    }

    pub fn contains(&self, p: Point) -> bool {
        let (x, y) = self.local(p);
        x.hypot(y) <= self.radius_m
    }

    /// Metres between two points.
    pub fn distance(&self, a: Point, b: Point) -> f64 {
        let ((ax, ay), (bx, by)) = (self.local(a), self.local(b));
        (bx - ax).hypot(by - ay)
    }

    /// A point drawn uniformly over the area.
    pub fn random_point(&self, rng: &mut impl Rng) -> Point {
        let r = self.radius_m * rng.random::<f64>().sqrt();
        let theta = rng.random_range(0.0..std::f64::consts::TAU);
        self.offset(self.center, r * theta.cos(), r * theta.sin())
    }

    /// A point `distance_m` from `from` in a random direction, inside the area
    /// (towards the centre when no random direction stays inside).
    pub fn random_point_at(&self, rng: &mut impl Rng, from: Point, distance_m: f64) -> Point {
        for _ in 0..8 {
            let theta = rng.random_range(0.0..std::f64::consts::TAU);
            let p = self.offset(from, distance_m * theta.cos(), distance_m * theta.sin());
            if self.contains(p) {
                return p;
            }
        }
        let (x, y) = self.local(from);
        let norm = x.hypot(y).max(1.0);
        self.offset(from, -x / norm * distance_m, -y / norm * distance_m)
    }
}

/// A route from where a vehicle is to a destination, advanced as it drives.
#[derive(Debug, Clone)]
pub struct Route {
    /// What is still ahead, in order: the corner, then the destination.
    ahead: Vec<Point>,
}

impl Route {
    /// Along the streets from `from` to `to`: first north or south, then east or west.
    pub fn new(from: Point, to: Point) -> Self {
        let corner = Point {
            lat: to.lat,
            lon: from.lon,
        };
        Self {
            ahead: vec![corner, to],
        }
    }

    /// Drives `metres` along the route from `at`; returns the new position.
    pub fn advance(&mut self, area: &Area, mut at: Point, mut metres: f64) -> Point {
        while let Some(&next) = self.ahead.first() {
            let left = area.distance(at, next);
            if left > metres {
                let f = metres / left;
                return Point {
                    lat: at.lat + (next.lat - at.lat) * f,
                    lon: at.lon + (next.lon - at.lon) * f,
                };
            }
            metres -= left;
            at = next;
            self.ahead.remove(0);
        }
        at
    }

    pub fn arrived(&self) -> bool {
        self.ahead.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const SF: Area = Area {
        center: Point {
            lat: 37.7749,
            lon: -122.4194,
        },
        radius_m: 3000.0,
    };

    #[test]
    fn random_points_stay_in_the_area_and_at_their_distance() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let p = SF.random_point(&mut rng);
            assert!(SF.contains(p), "{p:?}");
            let q = SF.random_point_at(&mut rng, p, 1000.0);
            assert!((SF.distance(p, q) - 1000.0).abs() < 1.0);
        }
        let edge = SF.offset(SF.center, 2999.0, 0.0);
        assert!(SF.contains(SF.random_point_at(&mut rng, edge, 1500.0)));
    }

    #[test]
    fn a_route_goes_round_the_corner_and_stops_at_its_end() {
        let from = SF.center;
        let to = SF.offset(from, 300.0, 400.0);
        let mut route = Route::new(from, to);
        // 400 m north first, then 300 m east: 700 m in all.
        let at = route.advance(&SF, from, 400.0);
        assert!(SF.distance(at, SF.offset(from, 0.0, 400.0)) < 0.5);
        assert!(!route.arrived());
        let at = route.advance(&SF, at, 299.0);
        assert!(!route.arrived());
        let at = route.advance(&SF, at, 50.0);
        assert!(route.arrived());
        assert_eq!(at, to);
        assert_eq!(route.advance(&SF, at, 10.0), to);
    }
}
