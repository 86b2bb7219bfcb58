//! Deterministic text-like payload for the bundle benchmark and the RSS example: SQL insert
//! statements and CSV rows built from small word lists and a xorshift generator, so the bytes
//! compress like real change logs and dumps (about 5-6x with deflate 6), not like random noise.

use std::fmt::Write as _;
use std::io::{self, Read};

const FIRST: &[&str] = &[
    "Keith", "Carl", "Greg", "Maria", "Aiko", "Lena", "Omar", "Priya", "Tomas", "Zoe", "Ines",
    "Jonas", "Fatima", "Noah", "Sven", "Chloe",
];
const LAST: &[&str] = &[
    "Palmer", "Lake", "Emerson", "Okafor", "Tanaka", "Novak", "Haddad", "Iyer", "Silva", "Berg",
    "Moreau", "Kowalski", "Nguyen", "Rossi", "Fischer", "Costa",
];
const CITY: &[&str] = &[
    "Lisbon", "Osaka", "Nairobi", "Lyon", "Krakow", "Austin", "Pune", "Bergen", "Quito", "Leeds",
];
const STATUS: &[&str] = &[
    "open",
    "shipped",
    "delivered",
    "returned",
    "cancelled",
    "on hold",
];
const WORDS: &[&str] = &[
    "pallet",
    "fragile",
    "call",
    "before",
    "delivery",
    "gate",
    "code",
    "left",
    "at",
    "dock",
    "customer",
    "requested",
    "invoice",
    "copy",
    "signed",
    "by",
    "driver",
    "second",
    "floor",
    "no",
    "weekend",
    "cold",
    "chain",
    "backorder",
    "partial",
];

/// Which kind of text an entry holds.
#[derive(Clone, Copy, Debug)]
pub enum Style {
    /// `INSERT INTO orders(...) VALUES (...);` lines.
    Sql,
    /// `id,date,city,name,amount,status` lines.
    Csv,
}

/// A `Read` that yields exactly `len` bytes of generated text, in constant memory.
#[derive(Debug)]
pub struct TextGen {
    state: u64,
    counter: u64,
    style: Style,
    remaining: u64,
    line: String,
    at: usize,
}

impl TextGen {
    /// `len` bytes of `style` text; the same `seed` gives the same bytes.
    pub fn new(seed: u64, style: Style, len: u64) -> Self {
        TextGen {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            counter: seed << 32,
            style,
            remaining: len,
            line: String::new(),
            at: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: fast and good enough to vary the text.
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        let i = (self.next() % list.len() as u64) as usize;
        list.get(i).copied().unwrap_or("")
    }

    fn fill_line(&mut self) {
        self.line.clear();
        self.at = 0;
        self.counter += 1 + self.next() % 7;
        let (counter, salt) = (self.counter, self.next() & 0xffff);
        let id = format!("{counter:012x}-{salt:04x}");
        let (first, last) = (self.pick(FIRST), self.pick(LAST));
        let status = self.pick(STATUS);
        let cents = self.next() % 100;
        let amount = self.next() % 5000;
        match self.style {
            Style::Sql => {
                let qty = 1 + self.next() % 20;
                let sku = self.next() % 20_000;
                let n = 1 + self.next() % 4;
                let note: Vec<&str> = (0..n).map(|_| self.pick(WORDS)).collect();
                let _ = writeln!(
                    self.line,
                    "INSERT INTO orders(id, customer, sku, qty, price, status, note) VALUES \
                     ('{id}', '{first} {last}', 'SKU-{sku:05}', {qty}, {amount}.{cents:02}, \
                     '{status}', '{}');",
                    note.join(" ")
                );
            }
            Style::Csv => {
                let day = 1 + self.next() % 28;
                let month = 1 + self.next() % 12;
                let city = self.pick(CITY);
                let _ = writeln!(
                    self.line,
                    "{id},2024-{month:02}-{day:02},{city},{first} {last},{amount}.{cents:02},{status}"
                );
            }
        }
    }
}

impl Read for TextGen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.remaining > 0 {
            if self.at >= self.line.len() {
                self.fill_line();
            }
            let avail = &self.line.as_bytes()[self.at..];
            let room = (buf.len() - n).min(avail.len());
            let take = room.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            buf[n..n + take].copy_from_slice(&avail[..take]);
            n += take;
            self.at += take;
            self.remaining -= take as u64;
        }
        Ok(n)
    }
}

/// The name, style and size of each of `entries` payload entries sharing `total` bytes.
pub fn layout(total: u64, entries: usize) -> Vec<(String, Style, u64)> {
    let per = total / entries as u64;
    (0..entries)
        .map(|i| {
            let style = if i % 2 == 0 { Style::Sql } else { Style::Csv };
            let ext = if i % 2 == 0 { "sql" } else { "csv" };
            let size = if i + 1 == entries {
                total - per * (entries as u64 - 1)
            } else {
                per
            };
            (format!("payload/part-{i:02}.{ext}"), style, size)
        })
        .collect()
}
