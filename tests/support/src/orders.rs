//! Generated orders, independent of `engine produce`: each test says the shape it needs
//! (customers, lines, catalogue, prices, status, how the time is written), and a seed makes
//! the same orders every run.

use crate::time::iso;
use serde_json::{Value, json};
use std::ops::Range;

/// How an order line's unit price is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Prices {
    /// Each product's own price: `Listed(p)[i]` is product `i + 1`'s.
    Listed(&'static [f64]),
    /// Drawn for each line: a whole number of cents from `min_cents` to `max_cents`.
    Drawn { min_cents: f64, max_cents: f64 },
}

/// The shape of generated orders. Each order is
/// `{order_id, customer_id, timestamp, items: [{product_id, product_name, quantity, unit_price,
/// subtotal}], total, status}`, with `total` the sum of the subtotals.
///
/// For each order the generator draws, in this order: the customer, the number of lines, for
/// each line the product, the quantity and (with [`Prices::Drawn`]) the price, then (with more
/// than one status) the status.
#[derive(Debug, Clone)]
pub struct OrderShape {
    /// Customer ids are `<customer_prefix><n>`, with `n` drawn from `0..customers`.
    pub customer_prefix: &'static str,
    pub customers: u8,
    /// How many lines an order has.
    pub lines: Range<usize>,
    /// The catalogue: product id `i + 1` is named `products[i]`.
    pub products: &'static [&'static str],
    pub prices: Prices,
    pub quantity: Range<i32>,
    /// The `status` values: none leaves the field out, one is written on every order, more are
    /// drawn.
    pub statuses: &'static [&'static str],
    /// How an event time (epoch ms) is written in `timestamp`.
    pub time: fn(i64) -> String,
}

impl OrderShape {
    /// `n` orders with ids `first_id..first_id + n`, the `i`th at event time
    /// `start_ms + i * step_ms`.
    pub fn values(
        &self,
        n: usize,
        seed: u64,
        first_id: i64,
        start_ms: i64,
        step_ms: i64,
    ) -> Vec<Value> {
        if let Prices::Listed(prices) = self.prices {
            assert_eq!(prices.len(), self.products.len(), "a price per product");
        }
        let mut r = fastrand::Rng::with_seed(seed);
        let products = self.products.len() as i32;
        (0..n)
            .map(|i| {
                let customer = format!("{}{}", self.customer_prefix, r.u8(0..self.customers));
                let items: Vec<Value> = (0..r.usize(self.lines.clone()))
                    .map(|_| {
                        let pid = r.i32(1..products + 1);
                        let qty = r.i32(self.quantity.clone());
                        let price = match self.prices {
                            Prices::Listed(prices) => prices[(pid - 1) as usize],
                            Prices::Drawn {
                                min_cents,
                                max_cents,
                            } => (min_cents + (r.f64() * (max_cents - min_cents)).round()) / 100.0,
                        };
                        json!({"product_id": pid, "product_name": self.products[(pid - 1) as usize],
                               "quantity": qty, "unit_price": price, "subtotal": price * qty as f64})
                    })
                    .collect();
                let total: f64 = items.iter().map(|it| it["subtotal"].as_f64().unwrap()).sum();
                let mut v = json!({
                    "order_id": first_id + i as i64,
                    "customer_id": customer,
                    "timestamp": (self.time)(start_ms + i as i64 * step_ms),
                    "items": items,
                    "total": total,
                });
                match self.statuses {
                    [] => {}
                    [status] => v["status"] = json!(status),
                    all => v["status"] = json!(all[r.usize(0..all.len())]),
                }
                v
            })
            .collect()
    }
}

/// Orders as Kafka messages keyed by their customer id.
pub fn by_customer(orders: &[Value]) -> Vec<(Option<String>, Vec<u8>)> {
    orders
        .iter()
        .map(|v| {
            let key = v["customer_id"].as_str().unwrap().to_string();
            (Some(key), serde_json::to_vec(v).unwrap())
        })
        .collect()
}

/// Small orders of the fault tests: 6 customers, 1 or 2 lines of 3 products at listed prices,
/// all paid, times with milliseconds.
pub const BURST: OrderShape = OrderShape {
    customer_prefix: "c",
    customers: 6,
    lines: 1..3,
    products: &["p1", "p2", "p3"],
    prices: Prices::Listed(&[1.5, 3.0, 4.5]),
    quantity: 1..4,
    statuses: &["paid"],
    time: iso,
};

/// A burst of [`BURST`] orders, one every 100 ms of event time from `start_ms`.
pub fn burst(n: usize, seed: u64, first_id: i64, start_ms: i64) -> Vec<(Option<String>, Vec<u8>)> {
    by_customer(&BURST.values(n, seed, first_id, start_ms, 100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{iso_seconds, ms};

    const SHAPE: OrderShape = OrderShape {
        customer_prefix: "cust-",
        customers: 3,
        lines: 0..4,
        products: &["a", "b"],
        prices: Prices::Drawn {
            min_cents: 100.0,
            max_cents: 200.0,
        },
        quantity: 1..3,
        statuses: &["paid", "shipped"],
        time: iso_seconds,
    };

    #[test]
    fn orders_follow_their_shape_and_their_seed() {
        let t0 = ms("2026-01-01T00:00:00Z");
        let orders = SHAPE.values(200, 3, 10, t0, 2_000);
        assert_eq!(orders, SHAPE.values(200, 3, 10, t0, 2_000), "same seed");
        assert_ne!(orders, SHAPE.values(200, 4, 10, t0, 2_000), "other seed");
        let mut line_counts = std::collections::BTreeSet::new();
        for (i, o) in orders.iter().enumerate() {
            assert_eq!(o["order_id"], json!(10 + i as i64));
            assert_eq!(o["timestamp"], json!(iso_seconds(t0 + i as i64 * 2_000)));
            assert!(["cust-0", "cust-1", "cust-2"].contains(&o["customer_id"].as_str().unwrap()));
            assert!(["paid", "shipped"].contains(&o["status"].as_str().unwrap()));
            let items = o["items"].as_array().unwrap();
            line_counts.insert(items.len());
            let mut total = 0.0;
            for it in items {
                let pid = it["product_id"].as_i64().unwrap();
                assert_eq!(it["product_name"], json!(["a", "b"][pid as usize - 1]));
                let price = it["unit_price"].as_f64().unwrap();
                assert!((1.0..=2.0).contains(&price), "{price}");
                assert_eq!((price * 100.0).round() / 100.0, price);
                let qty = it["quantity"].as_i64().unwrap();
                assert_eq!(it["subtotal"], json!(price * qty as f64));
                total += price * qty as f64;
            }
            assert!((o["total"].as_f64().unwrap() - total).abs() < 1e-9);
        }
        assert_eq!(line_counts, (0..4).collect(), "every number of lines");
    }

    #[test]
    fn one_status_is_written_and_none_is_left_out() {
        let burst = BURST.values(20, 1, 0, 0, 100);
        assert!(burst.iter().all(|o| o["status"] == "paid"));
        for o in &burst {
            for it in o["items"].as_array().unwrap() {
                let pid = it["product_id"].as_f64().unwrap();
                assert_eq!(it["unit_price"], json!(1.5 * pid));
            }
        }
        let no_status = OrderShape {
            statuses: &[],
            ..BURST
        };
        assert!(
            no_status
                .values(20, 1, 0, 0, 100)
                .iter()
                .all(|o| o.get("status").is_none())
        );
        let messages = by_customer(&burst);
        for ((key, bytes), o) in messages.iter().zip(&burst) {
            assert_eq!(json!(key), o["customer_id"], "keyed by customer");
            assert_eq!(&serde_json::from_slice::<Value>(bytes).unwrap(), o);
        }
    }
}
