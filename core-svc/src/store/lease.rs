//! The SQL of dispatch leases, which both stores speak alike: which replica
//! drives each pending booking's widening and expiry (`Store::lease_pending`).
//! Parameters are written `$1`, `$2`…, which SQLite also takes, numbered in the
//! order they first appear.

/// Drops `owner`'s leases of bookings that are no longer pending. Parameter 1:
/// the owner.
pub const FORGET_SETTLED: &str = "DELETE FROM dispatch_leases WHERE owner = $1
     AND booking_id IN (SELECT id FROM bookings WHERE status <> 'pending')";

/// Gives up `owner`'s leases. Parameter 1: the owner.
pub const RELEASE: &str = "DELETE FROM dispatch_leases WHERE owner = $1";

/// Leases to the owner every pending booking nobody holds, or whose lease lapsed,
/// or that is the owner's already, until a time; given the placeholders of the
/// owner, the new end of the lease and now.
pub fn take(owner: &str, until: &str, now: &str) -> String {
    format!(
        "INSERT INTO dispatch_leases (booking_id, owner, until)
         SELECT b.id, {owner}, {until} FROM bookings b WHERE b.status = 'pending'
         AND NOT EXISTS (SELECT 1 FROM dispatch_leases l
                         WHERE l.booking_id = b.id AND l.owner <> {owner} AND l.until >= {now})
         ON CONFLICT (booking_id) DO UPDATE SET owner = excluded.owner, until = excluded.until
         WHERE dispatch_leases.owner = excluded.owner OR dispatch_leases.until < {now}"
    )
}
