//! Typed string ids. Ids are strings on the wire (DESIGN: "ids are strings"); new ones are
//! UUIDv7 with a short kind prefix so a stray id in a log says what it names, and so that
//! they sort by creation time in indexes.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(TenantId, "ten");
id_type!(StoreId, "sto");
id_type!(OrderId, "ord");
id_type!(DriverId, "drv");
id_type!(ApiClientId, "cli");
id_type!(EventId, "evt");
id_type!(OfferId, "ofr");
id_type!(DeadLetterId, "dlq");
id_type!(PayloadId, "raw");
id_type!(SyncJobId, "job");
id_type!(WebhookEndpointId, "whe");
id_type!(WebhookDeliveryId, "whd");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_carry_prefix_and_sort_by_time() {
        let a = OrderId::generate();
        let b = OrderId::generate();
        assert!(a.as_str().starts_with("ord_"));
        assert!(a < b, "v7 ids must sort by creation: {a} !< {b}");
    }
}
