-- Reads of a tiered table with psql (simple protocol, text results).
SELECT count(*), sum(amount), min(created_at), max(day) FROM orders;
SELECT id, created_at, amount, status, note, score, day, flag FROM orders WHERE id % 97 = 0 ORDER BY id;
SELECT status, count(*), sum(amount) FROM orders WHERE created_at < '2025-06-01 00:00:00+00' GROUP BY status ORDER BY status;
SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY 1 ORDER BY 1;
SELECT o.id, c.name, o.amount FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id < 15 ORDER BY o.id;
SELECT id, tags, scores, prices, stamps, flags, took FROM posts WHERE id % 7 = 0 ORDER BY id;
\x on
SELECT * FROM orders WHERE id = 42;
\x off
SELECT count(*) FROM orders WHERE nosuch = 1;
\copy (SELECT id, created_at, amount, status, note FROM orders WHERE id % 97 = 0 ORDER BY id) to stdout with csv header
COPY (SELECT id, tags, took FROM posts WHERE id % 7 = 0 ORDER BY id) TO STDOUT;
SELECT status, count(*) AS n, sum(amount) AS total INTO TEMP per_status FROM orders GROUP BY status;
INSERT INTO per_status (status, n) SELECT 'all', count(*) FROM orders RETURNING *;
SELECT * FROM per_status ORDER BY status;
UPDATE per_status p SET total = -s.t FROM (SELECT status, sum(amount) AS t FROM orders WHERE id % 3 = 0 GROUP BY 1) s WHERE s.status = p.status;
DELETE FROM per_status p USING orders o WHERE o.status = p.status AND o.id = 2000 RETURNING p.status;
SELECT * FROM per_status ORDER BY status;
