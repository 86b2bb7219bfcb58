-- Diagnostic only (BERTH_BENCH_ALT): not capture semantics.
CREATE TRIGGER "berth_pre_item" BEFORE INSERT ON "item" BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) SELECT 'item', json_array(berth_r."id"), 'P', json_object('id', berth_r."id", 'n', berth_r."n", 'v', berth_r."v") FROM "item" AS berth_r WHERE ((berth_r."id" = NEW."id"));
END;
CREATE TRIGGER "berth_ins_item" AFTER INSERT ON "item" BEGIN
  INSERT INTO berth_log(tbl, pk, op) VALUES ('item', json_array(NEW."id"), 'I');
END;
CREATE TRIGGER "berth_preu_item" BEFORE UPDATE OF "id" ON "item" BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) SELECT 'item', json_array(berth_r."id"), 'P', json_object('id', berth_r."id", 'n', berth_r."n", 'v', berth_r."v") FROM "item" AS berth_r WHERE ((berth_r."id" = NEW."id")) AND NOT (berth_r."id" IS OLD."id");
END;
CREATE TRIGGER "berth_upd_item" AFTER UPDATE ON "item" WHEN OLD."id" IS NEW."id" BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ('item', json_array(NEW."id"), 'U', json_object('id', OLD."id", 'n', OLD."n", 'v', OLD."v"));
END;
CREATE TRIGGER "berth_key_item" AFTER UPDATE OF "id" ON "item" WHEN NOT (OLD."id" IS NEW."id") BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ('item', json_array(OLD."id"), 'D', json_object('id', OLD."id", 'n', OLD."n", 'v', OLD."v"));
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ('item', json_array(NEW."id"), 'I', json_array(OLD."id"));
END;
CREATE TRIGGER "berth_del_item" AFTER DELETE ON "item" BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ('item', json_array(OLD."id"), 'D', json_object('id', OLD."id", 'n', OLD."n", 'v', OLD."v"));
END;
