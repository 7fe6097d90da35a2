//! The archive's tables as Parquet: each table is a fixed list of typed columns; rows are
//! lists of [`Cell`]s, written with the `parquet` crate's column writers and read back with
//! its record reader. A content checksum over the cells (not the file's bytes) shows that
//! what a file decodes to is what was read from the database.

use crate::{corrupt, Result, StorageError};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::Arc;

/// A column's type, as stored in both databases and in the Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TEXT → BYTE_ARRAY (UTF8).
    Text,
    /// BIGINT → INT64 (times stay unix milliseconds, as in the live tables).
    Int,
    /// DOUBLE PRECISION → DOUBLE.
    Float,
    /// BYTEA/BLOB → BYTE_ARRAY.
    Bytes,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column { name, kind, nullable }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

pub(crate) type Rows = Vec<Vec<Cell>>;

/// An archived table: its file name stem and its columns, in file order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
}

use Kind::{Bytes, Float, Int, Text};

/// Every column of `orders`, so an archived order is the live row as it was.
pub(crate) const ORDERS: Table = Table {
    name: "orders",
    columns: &[
        col("id", Text, false),
        col("tenant_id", Text, false),
        col("store_id", Text, false),
        col("platform", Text, false),
        col("platform_order_id", Text, false),
        col("platform_order_number", Text, true),
        col("status", Text, false),
        col("dispatch_stalled", Int, false),
        col("status_reason", Text, true),
        col("customer_json", Text, false),
        col("dropoff_json", Text, false),
        col("dropoff_lat", Float, true),
        col("dropoff_lng", Float, true),
        col("items_json", Text, false),
        col("totals_json", Text, false),
        col("notes", Text, true),
        col("placed_at", Int, true),
        col("ready_at", Int, false),
        col("created_at", Int, false),
        col("updated_at", Int, false),
        col("platform_updated_at", Int, true),
        col("tracking_token", Text, false),
        col("driver_id", Text, true),
        col("eta_at", Int, true),
        col("raw_payload_id", Text, true),
        col("dispatch_attempts", Int, false),
    ],
};

/// The order's line items, one row each (from `orders.items_json`, which the orders file
/// also keeps verbatim): the shape analytics reads without parsing JSON.
pub(crate) const ITEMS: Table = Table {
    name: "items",
    columns: &[
        col("order_id", Text, false),
        col("tenant_id", Text, false),
        col("line", Int, false),
        col("sku", Text, true),
        col("name", Text, false),
        col("quantity", Int, false),
        col("unit_price_minor", Int, false),
    ],
};

/// The order's events (its `outbox` rows): the timeline, including the proof the driver
/// recorded at delivery (the `order_updated` event of step `delivered`).
pub(crate) const EVENTS: Table = Table {
    name: "events",
    columns: &[
        col("seq", Int, false),
        col("id", Text, false),
        col("tenant_id", Text, false),
        col("kind", Text, false),
        col("subject_id", Text, false),
        col("data", Text, false),
        col("occurred_at", Int, false),
        col("published_at", Int, true),
    ],
};

/// Proof-of-delivery photos (`delivery_photos`), bytes included.
pub(crate) const PROOF: Table = Table {
    name: "proof",
    columns: &[
        col("id", Text, false),
        col("tenant_id", Text, false),
        col("order_id", Text, false),
        col("driver_id", Text, false),
        col("content_type", Text, false),
        col("bytes", Bytes, false),
        col("created_at", Int, false),
    ],
};

pub(crate) const TABLES: [Table; 4] = [ORDERS, ITEMS, EVENTS, PROOF];

impl Table {
    pub fn by_name(name: &str) -> Option<Table> {
        TABLES.into_iter().find(|t| t.name == name)
    }

    pub fn select_list(&self) -> String {
        self.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
    }

    pub fn index(&self, name: &str) -> usize {
        self.columns.iter().position(|c| c.name == name).unwrap_or_else(|| panic!("{}.{name} is no column", self.name))
    }

    /// One database row as cells, in column order.
    pub fn cells(&self, row: &AnyRow) -> Result<Vec<Cell>> {
        self.columns
            .iter()
            .map(|c| {
                let cell = match c.kind {
                    Text => row.try_get::<Option<String>, _>(c.name).map(|v| v.map(Cell::Text)),
                    Int => row.try_get::<Option<i64>, _>(c.name).map(|v| v.map(Cell::Int)),
                    Float => row.try_get::<Option<f64>, _>(c.name).map(|v| v.map(Cell::Float)),
                    Bytes => row.try_get::<Option<Vec<u8>>, _>(c.name).map(|v| v.map(Cell::Bytes)),
                };
                Ok(cell.map_err(|e| corrupt(format!("{}.{}: {e}", self.name, c.name)))?.unwrap_or(Cell::Null))
            })
            .collect()
    }

    fn schema(&self) -> String {
        let fields: String = self
            .columns
            .iter()
            .map(|c| {
                let repetition = if c.nullable { "OPTIONAL" } else { "REQUIRED" };
                let physical = match c.kind {
                    Text => "BYTE_ARRAY",
                    Int => "INT64",
                    Float => "DOUBLE",
                    Bytes => "BYTE_ARRAY",
                };
                let logical = if c.kind == Text { " (UTF8)" } else { "" };
                format!("{repetition} {physical} {}{logical}; ", c.name)
            })
            .collect();
        format!("message {} {{ {fields}}}", self.name)
    }

    /// The table's rows as a Snappy-compressed Parquet file, in one row group.
    pub fn write_parquet(&self, rows: &Rows) -> Result<Vec<u8>> {
        let schema = Arc::new(parse_message_type(&self.schema()).map_err(corrupt)?);
        let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
        let mut buf = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut buf, schema, props).map_err(corrupt)?;
        if !rows.is_empty() {
            let mut group = writer.next_row_group().map_err(corrupt)?;
            let mut at = 0;
            while let Some(mut column) = group.next_column().map_err(corrupt)? {
                let spec = self.columns[at];
                let mut levels = Vec::with_capacity(rows.len());
                let mut texts = Vec::new();
                let mut ints = Vec::new();
                let mut floats = Vec::new();
                for row in rows {
                    let cell = &row[at];
                    levels.push(i16::from(*cell != Cell::Null));
                    match (cell, spec.kind) {
                        (Cell::Null, _) if spec.nullable => {}
                        (Cell::Text(s), Text) => texts.push(ByteArray::from(s.as_bytes().to_vec())),
                        (Cell::Bytes(b), Bytes) => texts.push(ByteArray::from(b.clone())),
                        (Cell::Int(i), Int) => ints.push(*i),
                        (Cell::Float(f), Float) => floats.push(*f),
                        (other, _) => {
                            return Err(corrupt(format!("{}.{} cannot hold {other:?}", self.name, spec.name)))
                        }
                    }
                }
                let defs = spec.nullable.then_some(&levels[..]);
                let written = match spec.kind {
                    Text | Bytes => column.typed::<ByteArrayType>().write_batch(&texts, defs, None),
                    Int => column.typed::<Int64Type>().write_batch(&ints, defs, None),
                    Float => column.typed::<DoubleType>().write_batch(&floats, defs, None),
                };
                written.map_err(corrupt)?;
                column.close().map_err(corrupt)?;
                at += 1;
            }
            group.close().map_err(corrupt)?;
        }
        writer.close().map_err(corrupt)?;
        Ok(buf)
    }

    /// Decode a file written by [`Table::write_parquet`]: its rows, after checking that its
    /// columns are this table's.
    pub fn read_parquet(&self, bytes: Vec<u8>) -> Result<Rows> {
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).map_err(corrupt)?;
        let fields = reader.metadata().file_metadata().schema_descr().columns().to_vec();
        let names: Vec<&str> = fields.iter().map(|c| c.name()).collect();
        let expected: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        if names != expected {
            return Err(corrupt(format!("{}: columns {names:?}, expected {expected:?}", self.name)));
        }
        let mut rows = Vec::new();
        for row in reader.get_row_iter(None).map_err(corrupt)? {
            let row = row.map_err(corrupt)?;
            let cells = row
                .get_column_iter()
                .map(|(name, field)| match field {
                    Field::Null => Ok(Cell::Null),
                    Field::Long(i) => Ok(Cell::Int(*i)),
                    Field::Double(f) => Ok(Cell::Float(*f)),
                    Field::Str(s) => Ok(Cell::Text(s.clone())),
                    Field::Bytes(b) => Ok(Cell::Bytes(b.data().to_vec())),
                    other => Err(corrupt(format!("{}.{name}: unexpected value {other}", self.name))),
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(cells);
        }
        Ok(rows)
    }
}

/// SHA-256 over the rows' values in order, each tagged with its type and length-prefixed,
/// so two row sets hash alike only when every value is the same.
pub(crate) fn content_checksum(rows: &Rows) -> String {
    let mut h = Sha256::new();
    for row in rows {
        h.update(b"R");
        for cell in row {
            match cell {
                Cell::Null => h.update(b"N"),
                Cell::Int(i) => {
                    h.update(b"I");
                    h.update(i.to_le_bytes());
                }
                Cell::Float(f) => {
                    h.update(b"F");
                    h.update(f.to_bits().to_le_bytes());
                }
                Cell::Text(s) => {
                    h.update(b"T");
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                Cell::Bytes(b) => {
                    h.update(b"B");
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
    }
    hex::encode(h.finalize())
}

pub(crate) fn file_checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Cell {
    pub fn text(&self) -> Result<&str> {
        match self {
            Cell::Text(s) => Ok(s),
            other => Err(StorageError::Corrupt(format!("expected text, found {other:?}"))),
        }
    }

    pub fn int(&self) -> Result<i64> {
        match self {
            Cell::Int(i) => Ok(*i),
            other => Err(StorageError::Corrupt(format!("expected an integer, found {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_round_trip_through_parquet() {
        let rows: Rows = vec![
            vec![
                Cell::Text("pho_1".into()),
                Cell::Text("t1".into()),
                Cell::Text("o1".into()),
                Cell::Text("d1".into()),
                Cell::Text("image/jpeg".into()),
                Cell::Bytes(vec![0, 255, 7]),
                Cell::Int(-5),
            ],
            vec![
                Cell::Text("pho_2".into()),
                Cell::Text("t1".into()),
                Cell::Text("ö".into()),
                Cell::Text("d1".into()),
                Cell::Text("image/png".into()),
                Cell::Bytes(vec![]),
                Cell::Int(i64::MAX),
            ],
        ];
        let file = PROOF.write_parquet(&rows).expect("write");
        let back = PROOF.read_parquet(file).expect("read");
        assert_eq!(back, rows);
        assert_eq!(content_checksum(&back), content_checksum(&rows));
        let mut changed = rows.clone();
        changed[1][6] = Cell::Int(0);
        assert_ne!(content_checksum(&changed), content_checksum(&rows));
        assert!(EVENTS.read_parquet(PROOF.write_parquet(&rows).unwrap()).is_err(), "another table's file is refused");
    }

    #[test]
    fn nullable_columns_keep_their_nulls_and_empty_tables_write() {
        let mut row = vec![Cell::Null; ORDERS.columns.len()];
        for (i, c) in ORDERS.columns.iter().enumerate() {
            if !c.nullable {
                row[i] = match c.kind {
                    Text => Cell::Text(c.name.into()),
                    Int => Cell::Int(i as i64),
                    Float => Cell::Float(0.5),
                    Bytes => Cell::Bytes(vec![1]),
                };
            }
        }
        let mut located = row.clone();
        located[ORDERS.index("dropoff_lat")] = Cell::Float(60.17);
        let rows = vec![row, located];
        assert_eq!(ORDERS.read_parquet(ORDERS.write_parquet(&rows).unwrap()).unwrap(), rows);
        assert!(ITEMS.read_parquet(ITEMS.write_parquet(&Vec::new()).unwrap()).unwrap().is_empty());
        let mut bad = rows[0].clone();
        bad[0] = Cell::Null;
        assert!(ORDERS.write_parquet(&vec![bad]).is_err(), "a NULL in a required column is refused");
    }
}
