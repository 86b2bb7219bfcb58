-- A sales schema in the spirit of seed 004: employees in positions, accounts handled by
-- positions, opportunities with their assigned employees (the seed's S_OPTY_EMP), quotes
-- (S_DOC_QUOTE), activities, contacts, and a product catalogue every node gets.
-- Keys are TEXT ids so rows inserted at different sites never collide.
-- Which node sees what is decided by docking.toml beside this file.

-- Organisation (enterprise: every node gets it).
CREATE TABLE employee(id TEXT PRIMARY KEY, name TEXT NOT NULL, login TEXT UNIQUE, email TEXT);
CREATE TABLE position(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  parent_id TEXT REFERENCES position(id)
);
-- Which employee holds which position (the seed's S_EMP_POSTN).
CREATE TABLE emp_postn(
  emp_id TEXT NOT NULL REFERENCES employee(id),
  position_id TEXT NOT NULL REFERENCES position(id),
  PRIMARY KEY (emp_id, position_id)
);
CREATE TABLE product(id TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL);

-- Accounts (limited: the account docking object).
CREATE TABLE account(id TEXT PRIMARY KEY, name TEXT NOT NULL, region TEXT);
-- Which positions are responsible for an account (the seed's S_ACCT_POSTN).
CREATE TABLE acct_postn(
  account_id TEXT NOT NULL REFERENCES account(id),
  position_id TEXT NOT NULL REFERENCES position(id),
  PRIMARY KEY (account_id, position_id)
);
CREATE TABLE contact(
  id TEXT PRIMARY KEY,
  account_id TEXT REFERENCES account(id),
  name TEXT NOT NULL,
  phone TEXT,
  email TEXT
);

-- Opportunities (limited: the opportunity docking object).
CREATE TABLE opty(
  id TEXT PRIMARY KEY,
  account_id TEXT REFERENCES account(id),
  name TEXT NOT NULL,
  sales_rep TEXT,
  stage TEXT DEFAULT 'open',
  amount REAL
);
-- The seed's S_OPTY_EMP: employees assigned to an opportunity.
CREATE TABLE opty_emp(
  opty_id TEXT NOT NULL REFERENCES opty(id),
  emp_id TEXT NOT NULL REFERENCES employee(id),
  role TEXT,
  PRIMARY KEY (opty_id, emp_id)
);
-- Products to be sold in an opportunity (the seed's S_OPTY_PROD).
CREATE TABLE opty_prod(
  id TEXT PRIMARY KEY,
  opty_id TEXT NOT NULL REFERENCES opty(id),
  product_id TEXT NOT NULL REFERENCES product(id),
  quantity INTEGER NOT NULL DEFAULT 1
);

-- Quotes (limited: the quote docking object; the seed's S_DOC_QUOTE).
CREATE TABLE quote(
  id TEXT PRIMARY KEY,
  opty_id TEXT REFERENCES opty(id),
  owner_emp_id TEXT REFERENCES employee(id),
  name TEXT NOT NULL,
  status TEXT DEFAULT 'draft',
  total REAL
);
CREATE TABLE quote_item(
  id TEXT PRIMARY KEY,
  quote_id TEXT NOT NULL REFERENCES quote(id),
  product_id TEXT NOT NULL REFERENCES product(id),
  quantity INTEGER NOT NULL DEFAULT 1,
  price REAL
);

-- Activities: calls, meetings, tasks; on an opportunity, on a quote, or on an account only.
-- Limited: member of the opportunity object (directly or through its quote) and of the
-- account object.
CREATE TABLE activity(
  id TEXT PRIMARY KEY,
  account_id TEXT REFERENCES account(id),
  opty_id TEXT REFERENCES opty(id),
  quote_id TEXT REFERENCES quote(id),
  owner_emp_id TEXT REFERENCES employee(id),
  kind TEXT NOT NULL,
  due TEXT,
  note TEXT
);

-- Commission plans: central only, never sent to a node.
CREATE TABLE commission(
  emp_id TEXT PRIMARY KEY REFERENCES employee(id),
  rate REAL NOT NULL,
  note TEXT
);

CREATE INDEX opty_account ON opty(account_id);
CREATE INDEX opty_emp_emp ON opty_emp(emp_id);
CREATE INDEX opty_prod_opty ON opty_prod(opty_id);
CREATE INDEX acct_postn_position ON acct_postn(position_id);
CREATE INDEX emp_postn_position ON emp_postn(position_id);
CREATE INDEX contact_account ON contact(account_id);
CREATE INDEX quote_opty ON quote(opty_id);
CREATE INDEX quote_owner ON quote(owner_emp_id);
CREATE INDEX quote_item_quote ON quote_item(quote_id);
CREATE INDEX activity_account ON activity(account_id);
CREATE INDEX activity_opty ON activity(opty_id);
CREATE INDEX activity_quote ON activity(quote_id);
