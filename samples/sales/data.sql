INSERT INTO employee VALUES ('E1', 'Keith Palmer', 'kpalmer'), ('E2', 'Carl Lake', 'clake'), ('E3', 'Greg Emerson', 'gemerson');
INSERT INTO account VALUES ('A1', 'Acme Shipping', 'north'), ('A2', 'Globex', 'south');
INSERT INTO opty VALUES ('O1', 'A1', 'Fleet renewal', 'Keith Palmer', 'open', 125000.0);
INSERT INTO opty_emp VALUES ('O1', 'E1', 'owner');
INSERT INTO product VALUES ('P1', 'Berth license', 990.0);
