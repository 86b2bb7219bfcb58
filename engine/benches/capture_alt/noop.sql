-- Diagnostic only (BERTH_BENCH_ALT): not capture semantics.
CREATE TRIGGER d_ins AFTER INSERT ON item WHEN 0 BEGIN INSERT INTO berth_log(tbl, pk, op) VALUES ('item', NEW.id, 'I'); END;
CREATE TRIGGER d_upd AFTER UPDATE ON item WHEN 0 BEGIN INSERT INTO berth_log(tbl, pk, op) VALUES ('item', NEW.id, 'U'); END;
