-- A small sales schema in the spirit of seed 004 (employees, accounts, opportunities).
-- Keys are TEXT ids so rows inserted at different sites never collide.
CREATE TABLE employee(id TEXT PRIMARY KEY, name TEXT NOT NULL, login TEXT UNIQUE);
CREATE TABLE account(id TEXT PRIMARY KEY, name TEXT NOT NULL, region TEXT);
CREATE TABLE opty(
  id TEXT PRIMARY KEY,
  account_id TEXT REFERENCES account(id),
  name TEXT NOT NULL,
  sales_rep TEXT,
  stage TEXT DEFAULT 'open',
  amount REAL
);
CREATE TABLE opty_emp(
  opty_id TEXT NOT NULL REFERENCES opty(id),
  emp_id TEXT NOT NULL REFERENCES employee(id),
  role TEXT,
  PRIMARY KEY (opty_id, emp_id)
);
CREATE TABLE product(id TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL);
