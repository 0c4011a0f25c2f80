//! Great-circle geometry and the spatial index over drivers' positions.
//!
//! Positions are indexed in an R*-tree (rstar) as points on the unit sphere in 3-D.
//! The straight-line (chord) distance between two such points grows with the
//! great-circle distance, so the tree's nearest-neighbour order IS great-circle
//! order, with no distortion near the poles or the antimeridian.

use rstar::RTree;
use rstar::primitives::GeomWithData;

use crate::model::GeoPoint;

/// Mean Earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres (haversine).
pub fn distance_m(a: GeoPoint, b: GeoPoint) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn unit_vector(p: GeoPoint) -> [f64; 3] {
    let (lat, lon) = (p.lat.to_radians(), p.lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Squared chord length on the unit sphere of a great-circle distance in metres.
fn chord2(distance_m: f64) -> f64 {
    let angle = (distance_m / EARTH_RADIUS_M).min(std::f64::consts::PI);
    (2.0 * (angle / 2.0).sin()).powi(2)
}

type Entry<K> = GeomWithData<[f64; 3], K>;

/// Points keyed by `K`, searchable by great-circle distance.
#[derive(Debug)]
pub struct SpatialIndex<K> {
    tree: RTree<Entry<K>>,
}

impl<K> Default for SpatialIndex<K> {
    fn default() -> Self {
        Self { tree: RTree::new() }
    }
}

impl<K: PartialEq + Clone> SpatialIndex<K> {
    pub fn insert(&mut self, key: K, at: GeoPoint) {
        self.tree.insert(GeomWithData::new(unit_vector(at), key));
    }

    /// Removes `key` from where it was inserted at `at`.
    pub fn remove(&mut self, key: &K, at: GeoPoint) -> bool {
        self.tree
            .remove(&GeomWithData::new(unit_vector(at), key.clone()))
            .is_some()
    }

    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys within `radius_m` of `center`, nearest first, with their great-circle
    /// distance, skipping those `skip` rejects, at most `limit`.
    pub fn nearest(
        &self,
        center: GeoPoint,
        radius_m: f64,
        limit: usize,
        mut skip: impl FnMut(&K) -> bool,
    ) -> Vec<(K, f64)> {
        let c = unit_vector(center);
        // A hair of slack so float rounding never drops a point right on the edge; the
        // exact haversine check below decides.
        let max2 = chord2(radius_m) * (1.0 + 1e-9) + 1e-18;
        self.tree
            .nearest_neighbor_iter_with_distance_2(c)
            .take_while(|(_, d2)| *d2 <= max2)
            .filter(|(e, _)| !skip(&e.data))
            .map(|(e, d2)| (e.data.clone(), chord_to_m(d2)))
            .filter(|(_, d)| *d <= radius_m)
            .take(limit)
            .collect()
    }
}

fn chord_to_m(d2: f64) -> f64 {
    2.0 * (d2.sqrt() / 2.0).min(1.0).asin() * EARTH_RADIUS_M
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint { lat, lon }
    }

    #[test]
    fn haversine_matches_known_distances() {
        // San Francisco to Los Angeles is about 559 km.
        let d = distance_m(p(37.7749, -122.4194), p(34.0522, -118.2437));
        assert!((d - 559_100.0).abs() < 1_000.0, "{d}");
        // One degree of latitude is about 111.2 km.
        assert!((distance_m(p(0.0, 0.0), p(1.0, 0.0)) - 111_195.0).abs() < 10.0);
        assert_eq!(distance_m(p(10.0, 10.0), p(10.0, 10.0)), 0.0);
    }

    #[test]
    fn nearest_first_within_radius() {
        let mut idx = SpatialIndex::default();
        let center = p(37.7749, -122.4194);
        idx.insert("far", p(37.80, -122.4194)); // ~2.8 km north
        idx.insert("near", p(37.7760, -122.4194)); // ~120 m
        idx.insert("out", p(37.90, -122.4194)); // ~13.9 km
        idx.insert("mid", p(37.7749, -122.40)); // ~1.7 km east
        let found = idx.nearest(center, 3_000.0, 10, |_| false);
        let keys: Vec<_> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["near", "mid", "far"]);
        for (k, d) in &found {
            let expect = distance_m(
                center,
                match *k {
                    "near" => p(37.7760, -122.4194),
                    "mid" => p(37.7749, -122.40),
                    _ => p(37.80, -122.4194),
                },
            );
            assert!((d - expect).abs() < 0.01, "{k}: {d} vs {expect}");
        }
        assert_eq!(
            idx.nearest(center, 3_000.0, 2, |k| *k == "near")
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            ["mid", "far"]
        );
    }

    #[test]
    fn works_across_the_antimeridian() {
        let mut idx = SpatialIndex::default();
        idx.insert(1, p(0.0, 179.999));
        idx.insert(2, p(0.0, 170.0));
        let found = idx.nearest(p(0.0, -179.999), 1_000.0, 5, |_| false);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 1);
    }

    #[test]
    fn remove_takes_out_exactly_one_key() {
        let mut idx = SpatialIndex::default();
        idx.insert(1, p(1.0, 1.0));
        idx.insert(2, p(1.0, 1.0));
        assert!(idx.remove(&1, p(1.0, 1.0)));
        assert!(!idx.remove(&1, p(1.0, 1.0)));
        assert_eq!(idx.len(), 1);
    }
}
