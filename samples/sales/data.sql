-- Small, realistic data for schema.sql. Nodes stand for employees: enroll them with
-- `berth node add NAME --attr employee=E1` (see docking.toml).
--
-- Who should see what (with docking.toml):
--   E1 Keith Palmer   (P-NORTH)        accounts A1, A3 by position and A5 through O4;
--                                      opportunities O1, O4 (assigned); quotes Q1, Q4.
--                                      Not O3: seeing account A3 does not give its opportunities.
--   E2 Carl Lake      (P-SOUTH)        accounts A2, A4; opportunity O2; quote Q2.
--   E3 Greg Emerson   (P-PRICING)      owns quote Q3, which brings opportunity O3 and account A3.
--   E4 Dana Whitfield (P-NORTH, P-KEY) accounts A1, A3, A5; opportunity O4; quote Q4.
--   E5 Ines Moreau    (P-MGR)          no account position, no assignment: nothing limited.
-- Every node gets employee, position, emp_postn and product; no node gets commission.

INSERT INTO employee VALUES
  ('E1', 'Keith Palmer', 'kpalmer', 'keith.palmer@example.com'),
  ('E2', 'Carl Lake', 'clake', 'carl.lake@example.com'),
  ('E3', 'Greg Emerson', 'gemerson', 'greg.emerson@example.com'),
  ('E4', 'Dana Whitfield', 'dwhitfield', 'dana.whitfield@example.com'),
  ('E5', 'Ines Moreau', 'imoreau', 'ines.moreau@example.com');

INSERT INTO position VALUES
  ('P-MGR', 'Sales Manager', NULL),
  ('P-NORTH', 'Account Executive North', 'P-MGR'),
  ('P-SOUTH', 'Account Executive South', 'P-MGR'),
  ('P-KEY', 'Key Accounts', 'P-MGR'),
  ('P-PRICING', 'Pricing Specialist', 'P-MGR');

INSERT INTO emp_postn VALUES
  ('E1', 'P-NORTH'), ('E2', 'P-SOUTH'), ('E3', 'P-PRICING'),
  ('E4', 'P-NORTH'), ('E4', 'P-KEY'), ('E5', 'P-MGR');

INSERT INTO product VALUES
  ('P1', 'Berth license', 990.0),
  ('P2', 'Berth support, 1 year', 240.0),
  ('P3', 'On-site training day', 1450.0),
  ('P4', 'USB exchange kit', 35.0),
  ('P5', 'Migration assistance', 3200.0);

INSERT INTO account VALUES
  ('A1', 'Acme Shipping', 'north'),
  ('A2', 'Globex', 'south'),
  ('A3', 'Northwind Traders', 'north'),
  ('A4', 'Initech', 'south'),
  ('A5', 'Umbrella Logistics', 'east');

INSERT INTO acct_postn VALUES
  ('A1', 'P-NORTH'), ('A3', 'P-NORTH'), ('A2', 'P-SOUTH'), ('A4', 'P-SOUTH'), ('A5', 'P-KEY');

INSERT INTO contact VALUES
  ('C1', 'A1', 'Maria Lopez', '+1 555 0101', 'maria.lopez@acme.example'),
  ('C2', 'A1', 'Tom Becker', '+1 555 0102', 'tom.becker@acme.example'),
  ('C3', 'A2', 'Hank Scorpio', '+1 555 0201', 'hank@globex.example'),
  ('C4', 'A3', 'Yuki Tanaka', '+1 555 0301', 'yuki.tanaka@northwind.example'),
  ('C5', 'A4', 'Bill Lumbergh', '+1 555 0401', 'bill@initech.example'),
  ('C6', 'A5', 'Albert Wesker', '+1 555 0501', 'a.wesker@umbrella.example');

INSERT INTO opty VALUES
  ('O1', 'A1', 'Fleet renewal', 'Keith Palmer', 'open', 125000.0),
  ('O2', 'A2', 'Warehouse sync', 'Carl Lake', 'proposal', 48000.0),
  ('O3', 'A3', 'Ship-to-shore replicas', 'Keith Palmer', 'open', 76000.0),
  ('O4', 'A5', 'Air-gapped depots', 'Dana Whitfield', 'negotiation', 210000.0),
  ('O5', 'A4', 'Branch offices pilot', 'Carl Lake', 'lost', 12000.0);

INSERT INTO opty_emp VALUES
  ('O1', 'E1', 'owner'),
  ('O2', 'E2', 'owner'),
  ('O4', 'E4', 'owner'),
  ('O4', 'E1', 'support');

INSERT INTO opty_prod VALUES
  ('OP1', 'O1', 'P1', 40), ('OP2', 'O1', 'P2', 40), ('OP3', 'O2', 'P1', 12),
  ('OP4', 'O3', 'P1', 20), ('OP5', 'O3', 'P3', 2), ('OP6', 'O4', 'P1', 60),
  ('OP7', 'O4', 'P5', 1), ('OP8', 'O5', 'P1', 3);

INSERT INTO quote VALUES
  ('Q1', 'O1', 'E1', 'Fleet renewal, 40 seats', 'sent', 49200.0),
  ('Q2', 'O2', 'E2', 'Warehouse sync, first offer', 'draft', 11880.0),
  ('Q3', 'O3', 'E3', 'Northwind volume pricing', 'draft', 22700.0),
  ('Q4', 'O4', 'E4', 'Depots, phase 1', 'sent', 62600.0);

INSERT INTO quote_item VALUES
  ('QI1', 'Q1', 'P1', 40, 990.0), ('QI2', 'Q1', 'P2', 40, 240.0),
  ('QI3', 'Q2', 'P1', 12, 990.0), ('QI4', 'Q3', 'P1', 20, 990.0),
  ('QI5', 'Q3', 'P3', 2, 1450.0), ('QI6', 'Q4', 'P1', 60, 990.0),
  ('QI7', 'Q4', 'P5', 1, 3200.0);

INSERT INTO activity VALUES
  ('ACT1', 'A1', 'O1', NULL, 'E1', 'meeting', '2025-03-04', 'Kick-off with the fleet team'),
  ('ACT2', 'A1', 'O1', 'Q1', 'E1', 'call', '2025-03-11', 'Walk through the quote'),
  ('ACT3', 'A3', NULL, 'Q3', 'E3', 'task', '2025-03-12', 'Check volume discount'),
  ('ACT4', 'A2', NULL, NULL, 'E2', 'call', '2025-03-05', 'Yearly account review'),
  ('ACT5', 'A5', 'O4', NULL, 'E4', 'meeting', '2025-03-20', 'Depot site visit');

INSERT INTO commission VALUES
  ('E1', 0.06, 'standard'), ('E2', 0.06, 'standard'), ('E4', 0.08, 'key accounts');
