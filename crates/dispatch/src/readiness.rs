//! When to offer an order: not before a driver is needed. An order that is not ready yet
//! is held back while the best driver could still arrive on time if sent later, so drivers
//! do not stand idle at stores and stay free for orders that are ready now.

use crate::assign::{CandidateSearch, CostModel, DriverSlot, DriverSource, OrderSlot};
use crate::DriverIndex;

/// Seconds dispatch can still wait: time until the order is ready minus the best driver's
/// ETA to the store. Negative once even the best driver would arrive after it is ready.
pub fn dispatch_slack_s(ready_in_s: f64, best_eta_s: f64) -> f64 {
    ready_in_s.max(0.0) - best_eta_s
}

/// Offer a ready order at once; offer one that is not ready yet once its slack is at most
/// `lead_s` (the margin for the offer round-trip and a driver declining).
pub fn should_offer_now(ready_in_s: f64, best_eta_s: f64, lead_s: f64) -> bool {
    ready_in_s.is_nan() || ready_in_s <= 0.0 || dispatch_slack_s(ready_in_s, best_eta_s) <= lead_s
}

/// An order that should be offered this tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DueOrder {
    /// Position in the `orders` given to [`due_orders`].
    pub order: usize,
    pub slack_s: f64,
}

/// The orders to offer now, lowest slack first (ties: ready first, then input order).
/// An order with no eligible driver in reach is priced as if its driver were `max_pickup_s`
/// away, so it comes due when even the farthest acceptable driver would have to leave.
pub fn due_orders(
    orders: &[OrderSlot],
    drivers: &[DriverSlot],
    index: Option<&DriverIndex>,
    model: &CostModel,
    lead_s: f64,
) -> Vec<DueOrder> {
    due_with(orders, &CandidateSearch::new(drivers, index, model), model, lead_s)
}

/// [`due_orders`] over every available driver of a live index (see [`crate::assign_live`]).
pub fn due_orders_live(
    orders: &[OrderSlot],
    source: &dyn DriverSource,
    model: &CostModel,
    lead_s: f64,
) -> Vec<DueOrder> {
    due_with(orders, &CandidateSearch::live(source, model), model, lead_s)
}

fn due_with(orders: &[OrderSlot], search: &CandidateSearch, model: &CostModel, lead_s: f64) -> Vec<DueOrder> {
    let mut due: Vec<DueOrder> = orders
        .iter()
        .enumerate()
        .filter_map(|(i, order)| {
            let best_eta_s = search.around(order, 1).edges.first().map_or(model.max_pickup_s, |e| e.eta_s);
            should_offer_now(order.ready_in_s, best_eta_s, lead_s)
                .then(|| DueOrder { order: i, slack_s: dispatch_slack_s(order.ready_in_s, best_eta_s) })
        })
        .collect();
    due.sort_by(|a, b| a.slack_s.total_cmp(&b.slack_s).then(a.order.cmp(&b.order)));
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_core::GeoPoint;

    #[test]
    fn ready_orders_go_now_and_others_wait_for_their_slack() {
        assert!(should_offer_now(0.0, 300.0, 60.0));
        assert!(!should_offer_now(900.0, 300.0, 60.0), "600 s of slack: hold");
        assert!(should_offer_now(350.0, 300.0, 60.0), "50 s of slack: offer");
        assert_eq!(dispatch_slack_s(-5.0, 100.0), -100.0);
    }

    #[test]
    fn due_orders_come_lowest_slack_first() {
        let at = GeoPoint::new(60.17, 24.94).unwrap();
        let order = |id: &str, ready_in_s| OrderSlot { order_id: id.into(), pickup: at, ready_in_s, excluded: vec![] };
        let orders = [order("later", 3_000.0), order("soon", 100.0), order("ready", 0.0)];
        let drivers = [DriverSlot { driver_id: "d".into(), location: at }];
        let due = due_orders(&orders, &drivers, None, &CostModel::default(), 120.0);
        assert_eq!(due.iter().map(|d| d.order).collect::<Vec<_>>(), [2, 1]);
    }
}
