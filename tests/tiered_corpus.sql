-- The differential corpus of tests/tiered.rs: one statement per line, run
-- against an oracle holding every row and through thermocline over a tiered
-- copy. A line starting with UNSUPPORTED must fail with SQLSTATE 0A000
-- through thermocline (it cannot be answered exactly yet).

-- Sums of float8 are left out: their last digit depends on the order rows
-- are added in, in Postgres too (a parallel plan changes it).

-- Counts and plain aggregates
SELECT count(*) FROM orders
SELECT count(*), count(amount), count(note), count(DISTINCT status) FROM orders
SELECT sum(amount), min(amount), max(amount) FROM orders
SELECT min(created_at), max(created_at), min(day), max(day) FROM orders
SELECT min(score), max(score), count(score) FROM orders
SELECT min(status), max(status), min(note), max(note) FROM orders
SELECT bool_and(flag), bool_or(flag) FROM orders
SELECT sum(customer_id), sum(id) FROM orders
SELECT count(*) FILTER (WHERE flag), count(*) FILTER (WHERE amount > 50) FROM orders
SELECT COALESCE(SUM(amount), 0) FROM orders WHERE status = 'nothing'
SELECT COALESCE(SUM(amount), 0), COALESCE(max(amount), 0) + 1 FROM orders
SELECT status, COALESCE(sum(amount), 0) AS total FROM orders GROUP BY status ORDER BY total DESC
SELECT customer_id, sum(amount * customer_id), max(amount) - min(amount) FROM orders GROUP BY 1 ORDER BY 1
SELECT avg(amount * 2), avg(amount + customer_id) FROM orders
SELECT count(*) FROM orders WHERE false

-- Grouping, HAVING, DISTINCT
SELECT status, count(*) FROM orders GROUP BY status ORDER BY status
SELECT status, count(*), sum(amount), max(amount), min(amount) FROM orders GROUP BY status ORDER BY 2 DESC, 1
SELECT customer_id, count(*) FROM orders GROUP BY customer_id HAVING count(*) > 120 ORDER BY customer_id
SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id HAVING sum(amount) > 5400 ORDER BY 2 DESC
SELECT DISTINCT status FROM orders ORDER BY 1
SELECT DISTINCT customer_id % 3 AS bucket FROM orders ORDER BY 1
SELECT status, flag, count(*) FROM orders GROUP BY status, flag ORDER BY status, flag NULLS FIRST
SELECT note, count(*) FROM orders GROUP BY note ORDER BY note NULLS LAST
SELECT count(DISTINCT customer_id) FROM orders WHERE amount > 10
SELECT status, count(DISTINCT customer_id) FROM orders GROUP BY status ORDER BY 1

-- Time buckets, as BI tools write them
SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT DATE_TRUNC('month', "public"."orders"."created_at") AS "created_at", SUM("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY DATE_TRUNC('month', "public"."orders"."created_at") ORDER BY DATE_TRUNC('month', "public"."orders"."created_at") ASC
SELECT date_trunc('year', created_at), sum(amount) FROM orders GROUP BY 1 ORDER BY 1
SELECT date_trunc('week', created_at), count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 20
SELECT date_trunc('day', created_at), count(*) FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 10
SELECT date_trunc('hour', created_at), count(*) FROM orders WHERE id < 200 GROUP BY 1 ORDER BY 1
SELECT date_trunc('quarter', created_at) AS q, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT day, count(*) FROM orders GROUP BY day ORDER BY day LIMIT 15
SELECT "public"."orders"."created_at" AS "created_at" FROM "public"."orders" WHERE "public"."orders"."created_at" >= DATE_TRUNC('day', (NOW() + INTERVAL '-300 day')) AND "public"."orders"."created_at" < DATE_TRUNC('day', NOW()) ORDER BY 1 LIMIT 5
SELECT count(*) FROM orders WHERE created_at >= DATE_TRUNC('day', (NOW() + INTERVAL '-300 day')) AND created_at < DATE_TRUNC('day', NOW())
SELECT count(*) FROM orders WHERE created_at >= TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2026-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')
SELECT DATE_TRUNC('month', created_at) AS created_at, SUM(amount) AS "SUM(amount)" FROM public.orders WHERE created_at >= TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2026-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('month', created_at) ORDER BY 1 LIMIT 10000
SELECT count(*) FROM orders WHERE day >= TO_DATE('2025-01-01', 'YYYY-MM-DD') AND day < to_date(to_char(now() - interval '60 days', 'YYYY-MM-DD'), 'YYYY-MM-DD')
SELECT to_char(now() - interval '90 days', 'YYYY-MM') AS since, count(*) FROM orders WHERE created_at < now() - interval '90 days'
SELECT count(*) FROM orders WHERE day BETWEEN make_date(2025, 6, 1) AND make_date(2025, 6, 30)
SELECT count(*) FROM orders WHERE created_at >= TO_TIMESTAMP('2025-13-45', 'YYYY-MM-DD')
UNSUPPORTED SELECT TO_DATE(TO_CHAR(created_at, 'IYYY-01'), 'IYYY-IW') AS y, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT to_char(created_at, 'YYYY-MM') AS m, count(*), sum(amount) FROM orders GROUP BY 1 ORDER BY 1
SELECT to_char(day, 'YYYY "Q"Q') AS q, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT id, to_char(created_at, 'Dy DD Mon YYYY HH12:MI:SS AM US'), to_char(day, 'FMMonth FMDDth, IYYY-IW ID') FROM orders WHERE id % 500 = 0 ORDER BY id
SELECT count(*) FROM orders WHERE to_char(created_at, 'D') IN ('1', '7')
SELECT to_char(created_at, 'Day') AS d, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC, 1
UNSUPPORTED SELECT to_char(created_at, 'YYYY-MM-DD TZ') FROM orders WHERE id < 5
UNSUPPORTED SELECT to_char(amount, '999D99') FROM orders WHERE id < 5
SELECT max(created_at::text) FROM orders
SELECT id, score::text, created_at::text, day::text, created_at::time::text AS t, (created_at - date_trunc('day', created_at))::text AS since FROM orders WHERE id < 25 ORDER BY id
SELECT id, 'at ' || created_at, day || '', score || '', flag || '', concat(day, '/', created_at, '/', score, '/', flag) FROM orders WHERE id < 25 ORDER BY id
SELECT id, concat(created_at, ' ', score * 1e20, ' ', amount), (score * 1e20)::text AS big FROM orders WHERE id < 9 ORDER BY id
UNSUPPORTED SELECT id, created_at::timestamp(0) FROM orders WHERE id < 5 ORDER BY id
SELECT id, customer_id::text || '-' || day::text AS k, flag::text FROM orders WHERE id < 20 ORDER BY id
SELECT count(*) FROM orders WHERE created_at BETWEEN '2025-03-01T00:00:00Z' AND '2025-04-01T00:00:00Z'
SELECT count(*) FROM orders WHERE created_at >= '2025-01-01' AND created_at < '2025-02-01'
SELECT count(*) FROM orders WHERE created_at < now() - interval '1 year'
SELECT count(*) FROM orders WHERE created_at >= now() - interval '7 days'
SELECT count(*) FROM orders WHERE created_at >= now() - interval '45 days'
SELECT count(*), sum(amount) FROM orders WHERE created_at >= now() - interval '31 days' AND created_at < now() - interval '29 days'
SELECT id FROM orders WHERE status = 'edge' ORDER BY id
SELECT count(*) FROM orders WHERE day >= current_date - 60
SELECT count(*) FROM orders WHERE day < '2025-06-01'
SELECT count(*) FROM orders WHERE day BETWEEN '2025-06-01' AND '2025-12-31'
SELECT CAST(extract(dow from created_at) AS integer) + 1 AS dow, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT floor(extract(epoch from created_at)/86400)*86400 AS "time", sum(amount) AS "value" FROM orders WHERE id < 100 GROUP BY 1 ORDER BY 1
SELECT floor(extract(epoch from created_at)/3600)*3600 AS "time", count(*) AS "value" FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 30
SELECT floor(extract(epoch from created_at) / 7) AS k, floor(amount / 3), floor(-amount / 4) FROM orders WHERE id < 40 ORDER BY id
SELECT CAST(FLOOR(EXTRACT(EPOCH FROM CAST(created_at AS TIMESTAMP)) / 86400) - FLOOR(EXTRACT(EPOCH FROM CAST(day AS TIMESTAMP)) / 86400) AS BIGINT) FROM orders WHERE id < 30 ORDER BY id
SELECT avg(amount) FROM orders
SELECT status, avg(amount), avg(customer_id), avg(id) FROM orders GROUP BY status ORDER BY status
SELECT avg(amount) FILTER (WHERE flag), avg(DISTINCT customer_id) FROM orders
SELECT customer_id % 3 AS k, avg(amount), avg(customer_id) FROM orders WHERE amount < 1 GROUP BY 1 ORDER BY 1
UNSUPPORTED SELECT avg(amount / 1000) FROM orders
SELECT avg(amount), avg(id) FROM orders WHERE false
SELECT id, avg(amount) OVER (PARTITION BY status) FROM orders WHERE id < 30 ORDER BY id
SELECT status FROM orders GROUP BY status ORDER BY avg(amount)
SELECT status, avg(amount) FROM orders GROUP BY status HAVING avg(amount) > 50
SELECT customer_id, avg(amount) AS a FROM orders GROUP BY 1 ORDER BY a DESC, 1 LIMIT 8
SELECT customer_id, avg(amount) FROM orders GROUP BY 1 ORDER BY 2, 1
SELECT status, avg(amount), avg(customer_id) FROM orders GROUP BY 1 ORDER BY 3 DESC, 2 LIMIT 4
SELECT customer_id, avg(amount) FROM orders GROUP BY 1 HAVING avg(amount) BETWEEN 45 AND 55 ORDER BY 1
SELECT customer_id, rank() OVER (ORDER BY avg(amount) DESC, customer_id) FROM orders GROUP BY 1 ORDER BY 1
SELECT customer_id, avg(customer_id) FROM orders GROUP BY 1 HAVING avg(customer_id) IN (3, 4, 5) ORDER BY 1
SELECT id, extract(epoch from created_at), extract(epoch from day), extract(epoch from created_at) * 1000 FROM orders WHERE id < 5 ORDER BY id
SELECT extract(epoch from created_at) AS "time", amount AS "value" FROM orders WHERE extract(epoch from created_at) > extract(epoch from now()) - 86400 * 400 ORDER BY 1 LIMIT 20

-- Point and range reads
SELECT * FROM orders WHERE id = 42
SELECT * FROM orders WHERE id = 2399
SELECT * FROM orders WHERE id IN (7, 1500, 2399, 100001)
SELECT * FROM orders WHERE id BETWEEN 1000 AND 1010 ORDER BY id
SELECT id, created_at FROM orders WHERE id % 97 = 0 ORDER BY id
SELECT id, amount FROM orders WHERE amount > 99 ORDER BY amount DESC, id
SELECT id FROM orders WHERE amount IS NULL ORDER BY id LIMIT 10
SELECT id FROM orders WHERE note IS NULL AND flag IS NULL ORDER BY id LIMIT 10
SELECT id FROM orders WHERE NOT flag ORDER BY id LIMIT 10
SELECT id, status FROM orders WHERE status IN ('new', 'late') ORDER BY id DESC LIMIT 10
SELECT id FROM orders WHERE status <> 'paid' AND customer_id = 7 ORDER BY id LIMIT 10
SELECT id, score FROM orders WHERE score > 200.5 ORDER BY score LIMIT 10
SELECT id, note FROM orders WHERE note LIKE 'note 1%' ORDER BY id LIMIT 12
SELECT id, note FROM orders WHERE note = 'note 3' ORDER BY id LIMIT 5
SELECT id FROM orders ORDER BY id LIMIT 5 OFFSET 100
SELECT id FROM orders ORDER BY created_at DESC, id LIMIT 5
SELECT id, day FROM orders ORDER BY day, id LIMIT 5

-- Expressions
SELECT id, amount * 2, amount + 1, -amount, amount * amount, amount - customer_id FROM orders WHERE id < 20 ORDER BY id
SELECT id, amount - 0.5, amount * 1.50, 0.25 + amount FROM orders WHERE id < 20 ORDER BY id
SELECT id, score * 0.5, score + 1.25 FROM orders WHERE id < 20 ORDER BY id
SELECT count(*) FROM orders WHERE score > 12.5 AND amount < 50.25
SELECT id, amount * 2 AS doubled FROM orders WHERE id < 40 ORDER BY doubled DESC NULLS LAST, id LIMIT 7
SELECT id, amount / 3, round(amount / 7, 2), customer_id / 3.0, amount / -0.7, (amount * 2) / (customer_id + 1) FROM orders WHERE id < 40 ORDER BY id
SELECT sum(amount) / count(*), sum(amount) / sum(customer_id), max(amount) / 1000000 FROM orders
SELECT id, amount / (customer_id - customer_id) FROM orders WHERE id < 5
UNSUPPORTED SELECT id, amount / 3 AS third FROM orders WHERE id < 20 ORDER BY third
SELECT id, customer_id * 10 + 1, id - 1 FROM orders WHERE id < 10 ORDER BY id
SELECT id, upper(status), lower(status), length(status) FROM orders WHERE id < 10 ORDER BY id
SELECT id, status || '-' || customer_id FROM orders WHERE id < 10 ORDER BY id
SELECT id, CASE WHEN amount > 50 THEN 'big' WHEN amount IS NULL THEN 'none' ELSE 'small' END FROM orders WHERE id < 30 ORDER BY id
SELECT id, COALESCE(note, 'no note') FROM orders WHERE id < 30 ORDER BY id
SELECT id, COALESCE(amount, 0), COALESCE(amount, customer_id * 2) FROM orders WHERE id < 30 ORDER BY id
SELECT id, NULLIF(status, 'paid') FROM orders WHERE id < 10 ORDER BY id
SELECT id, score * 2, -score FROM orders WHERE id < 10 ORDER BY id
SELECT id, created_at + interval '1 day', day + 1 FROM orders WHERE id < 5 ORDER BY id
SELECT id, abs(customer_id - 10), greatest(customer_id, 10), least(customer_id, 10) FROM orders WHERE id < 10 ORDER BY id
SELECT id, round(amount), round(amount, 1), round(amount, 3), round(amount, -1), round(-amount, 1), round(score), round(customer_id), round(customer_id, 1) FROM orders WHERE id < 40 ORDER BY id
SELECT status, round(avg(amount), 2), round(avg(amount)), round(avg(customer_id), 1), round(sum(amount), -2) FROM orders GROUP BY 1 ORDER BY 1
SELECT status, round(avg(amount), 2) AS a FROM orders GROUP BY 1 ORDER BY a DESC
SELECT customer_id, round(avg(amount), 1) FROM orders GROUP BY 1 HAVING round(avg(amount), 1) > 40 ORDER BY 1
SELECT round(avg(score)) FROM orders WHERE id < 2000
SELECT id, substring(status from 1 for 2), left(status, 2) FROM orders WHERE id < 6 ORDER BY id
SELECT id, flag AND id > 5, flag OR id > 5, NOT flag FROM orders WHERE id < 10 ORDER BY id
SELECT id, created_at::date FROM orders WHERE id < 5 ORDER BY id
SELECT id, amount::text, id::text FROM orders WHERE id < 5 ORDER BY id
SELECT CAST(DATE_TRUNC('month', day) AS date) AS "order_date", COUNT(*) AS "count" FROM orders GROUP BY 1 ORDER BY 1

-- Joins with a table that is not tiered
SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.region ORDER BY 1
SELECT c.name, count(o.id) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id AND o.amount > 99 GROUP BY c.name ORDER BY 1
SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id < 15 ORDER BY o.id
SELECT o.id, c.region FROM orders o, customers c WHERE c.id = o.customer_id AND c.region = 'north' ORDER BY o.id LIMIT 10
SELECT c.region, date_trunc('year', o.created_at), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2 ORDER BY 1, 2
SELECT a.id, b.id FROM orders a JOIN orders b ON b.id = a.id + 1 WHERE a.id < 5 ORDER BY 1

-- Subqueries, CTEs, set operations
SELECT count(*) FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE region = 'south')
SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.region = 'east')
SELECT id FROM orders WHERE amount = (SELECT max(amount) FROM orders) ORDER BY id
SELECT (SELECT count(*) FROM orders) AS n, (SELECT count(*) FROM customers) AS m
SELECT id, (SELECT name FROM customers c WHERE c.id = o.customer_id) FROM orders o WHERE id < 8 ORDER BY id
-- A subquery used as a value returns one row, or none; more is 21000
SELECT id, (SELECT name FROM customers c WHERE c.region = 'north') FROM orders o WHERE id < 8 ORDER BY id
SELECT count(*) FROM orders o WHERE customer_id = (SELECT id FROM customers WHERE region = 'north')
SELECT count(*) FROM orders o WHERE customer_id = (SELECT id FROM customers WHERE name = 'customer 3')
SELECT id, (SELECT name FROM customers c WHERE c.region = 'north' AND c.id = 1) FROM orders o WHERE id < 8 ORDER BY id
SELECT id, (SELECT o2.amount FROM orders o2 WHERE o2.id = o.id + 1) AS next FROM orders o WHERE id < 6 OR id BETWEEN 2395 AND 2400 ORDER BY id
SELECT id, (SELECT c.region FROM customers c WHERE c.id = o.customer_id) AS r, amount FROM orders o WHERE id > 2380 ORDER BY r, id
UNSUPPORTED SELECT (SELECT region FROM customers c WHERE c.id = o.customer_id) AS r, count(*) FROM orders o GROUP BY 1 ORDER BY 1
-- Averages of subqueries, compared by their values
SELECT count(*) FROM orders o WHERE amount > (SELECT avg(amount) FROM orders o2 WHERE o2.customer_id = o.customer_id)
SELECT id FROM orders o WHERE amount > (SELECT avg(amount) FROM orders o2 WHERE o2.customer_id = o.customer_id AND o2.id > 0) AND id < 2000 ORDER BY id LIMIT 5
SELECT count(*) FROM orders WHERE amount > (SELECT avg(amount) FROM orders)
SELECT customer_id FROM orders GROUP BY customer_id HAVING avg(amount) > (SELECT avg(amount) FROM orders) ORDER BY 1
UNSUPPORTED SELECT count(*) FROM orders WHERE amount IN (SELECT avg(amount) FROM orders GROUP BY customer_id)
WITH big AS (SELECT * FROM orders WHERE amount > 90) SELECT count(*), min(id) FROM big
WITH m AS (SELECT date_trunc('month', created_at) AS m, sum(amount) AS s FROM orders GROUP BY 1) SELECT count(*), max(s) FROM m
WITH per AS (SELECT customer_id, count(*) AS n FROM orders GROUP BY 1) SELECT c.name, per.n FROM per JOIN customers c ON c.id = per.customer_id ORDER BY 2 DESC, 1 LIMIT 5
SELECT id FROM orders WHERE id > 2390 UNION ALL SELECT id FROM customers ORDER BY 1
SELECT status FROM orders UNION SELECT region FROM customers ORDER BY 1
SELECT id FROM orders WHERE id < 30 EXCEPT SELECT id FROM customers ORDER BY 1
SELECT id FROM orders WHERE id < 30 INTERSECT SELECT id FROM customers ORDER BY 1
SELECT * FROM (SELECT status, count(*) AS n FROM orders GROUP BY status) t WHERE n > 10 ORDER BY 1

-- Window functions
SELECT id, row_number() OVER (ORDER BY id) FROM orders WHERE id < 20 ORDER BY id
SELECT id, rank() OVER (PARTITION BY status ORDER BY amount DESC NULLS LAST, id) FROM orders WHERE id < 40 ORDER BY id
SELECT id, sum(amount) OVER (PARTITION BY customer_id ORDER BY id ROWS UNBOUNDED PRECEDING) FROM orders WHERE id < 50 ORDER BY id
SELECT date_trunc('month', created_at) AS m, SUM(SUM(amount)) OVER (ORDER BY date_trunc('month', created_at) ROWS UNBOUNDED PRECEDING) FROM orders GROUP BY 1 ORDER BY 1
SELECT id, lag(id) OVER (ORDER BY id), lead(id) OVER (ORDER BY id) FROM orders WHERE id < 12 ORDER BY id
SELECT status, count(*), count(*) * 100 / sum(count(*)) OVER () FROM orders GROUP BY status ORDER BY status
SELECT status, round(sum(amount) * 100 / sum(sum(amount)) OVER (), 2) AS share FROM orders GROUP BY status ORDER BY share DESC

-- Views over the tiered table (and a view over that view)
SELECT count(*), sum(amount) FROM paid_orders
SELECT * FROM paid_orders WHERE id < 40 ORDER BY id
SELECT month, n FROM paid_by_month ORDER BY month
SELECT * FROM paid_by_month ORDER BY month
SELECT c.region, sum(p.amount) FROM paid_orders p JOIN customers c ON c.id = p.customer_id GROUP BY 1 ORDER BY 1

-- Errors are Postgres's
SELECT nosuch FROM orders
SELECT count(*) FROM orders WHERE amount / 0 > 1
SELECT id FROM orders WHERE status = 1
SELECT * FROM orders WHERE id = 'x'
SELECT id FROM orders o JOIN nowhere n ON n.id = o.id

-- Operators, NULLs and functions at their edges; a read the parser
-- cannot read (BETWEEN SYMMETRIC) is refused, not answered from hot rows
SELECT count(*) FROM orders WHERE note LIKE 'n%'
SELECT count(*) FROM orders WHERE status ILIKE 'P%'
SELECT count(*) FROM orders WHERE status LIKE '%a_d%'
SELECT count(*) FROM orders WHERE status NOT LIKE 'p%'
SELECT count(*) FROM orders WHERE customer_id NOT IN (1, 2, NULL)
SELECT count(*) FROM orders WHERE customer_id IN (1, 2, NULL)
SELECT count(*) FROM orders WHERE score NOT IN (SELECT score FROM orders WHERE id < 10)
SELECT id, left(status, -2), right(status, -2), left(status, 2) FROM orders WHERE id < 6 ORDER BY id
SELECT id, btrim('  ' || status || '  '), ltrim(status, 'p'), rtrim(status, 'd') FROM orders WHERE id < 6 ORDER BY id
SELECT id, strpos(status, 'a'), replace(status, 'a', 'AA'), concat(status, NULL, id), status || NULL FROM orders WHERE id < 6 ORDER BY id
SELECT id, customer_id % -3, -customer_id % 3, customer_id / -3, -customer_id / 3 FROM orders WHERE id < 6 ORDER BY id
SELECT id, abs(amount - 50), abs(-customer_id), nullif(status, 'paid'), coalesce(note, status) FROM orders WHERE id < 8 ORDER BY id
SELECT count(*) FILTER (WHERE note IS NULL), count(*) FILTER (WHERE score IS NOT NULL AND flag) FROM orders
SELECT id, note FROM orders ORDER BY note NULLS FIRST, id LIMIT 5
SELECT id, score FROM orders ORDER BY score DESC NULLS LAST, id LIMIT 5
SELECT id, score FROM orders ORDER BY score, id LIMIT 5 OFFSET 3
SELECT DISTINCT ON (customer_id) customer_id, id, amount FROM orders ORDER BY customer_id, amount DESC, id
SELECT count(*) FROM orders WHERE score IS DISTINCT FROM NULL AND note IS NOT DISTINCT FROM NULL
SELECT count(*) FROM orders WHERE flag IS DISTINCT FROM true AND customer_id = 3
SELECT count(*) FROM orders WHERE flag IS NOT DISTINCT FROM false OR customer_id < 3 AND status = 'paid'
SELECT status, count(*) FILTER (WHERE flag IS DISTINCT FROM (customer_id > 10) AND amount > 50), count(*) FILTER (WHERE flag IS NOT DISTINCT FROM true IS TRUE) FROM orders GROUP BY 1 ORDER BY 1
SELECT status, count(*) FILTER (WHERE NULL IS NOT DISTINCT FROM flag), count(*) FILTER (WHERE NULL IS DISTINCT FROM amount) FROM orders GROUP BY status ORDER BY status
UNSUPPORTED SELECT count(*) FROM orders WHERE customer_id BETWEEN SYMMETRIC 10 AND 5
SELECT CASE WHEN amount > 50 THEN 'big' WHEN amount IS NULL THEN 'none' ELSE 'small' END AS size, count(*) FROM orders GROUP BY 1 ORDER BY 1
SELECT upper(status), lower(note), length(note), char_length(status) FROM orders WHERE id < 6 ORDER BY id
SELECT id, greatest(customer_id, 5, NULL), least(amount, 10.5), least(score, 0.5::float8) FROM orders WHERE id < 6 ORDER BY id
UNSUPPORTED SELECT id, greatest(score, 0.5) FROM orders WHERE id < 6 ORDER BY id
UNSUPPORTED SELECT least(amount, 10.5) FROM orders WHERE id < 6 ORDER BY id
SELECT id, greatest(amount, 50.5, 50.50), least(amount * 2, amount + 1) FROM orders WHERE id < 200 ORDER BY id DESC LIMIT 6
SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.region = 'north')
SELECT count(*) FROM orders WHERE customer_id = ANY(ARRAY[1, 2, 3])
SELECT count(*) FROM orders WHERE NOT (status = ANY(ARRAY['paid', NULL])) OR NOT (note = SOME('{x,NULL}'))
SELECT id, status FROM orders WHERE id = ANY(ARRAY[5, 500, 5000]) OR note = ANY('{x,y}') ORDER BY id
UNSUPPORTED SELECT sum(customer_id::int2), sum(customer_id::bigint * 1000000000) FROM orders
SELECT max(id) - min(id), count(DISTINCT (customer_id, status)) FROM orders
SELECT customer_id, count(*) FROM orders GROUP BY ROLLUP (customer_id) ORDER BY 1 NULLS LAST LIMIT 5
SELECT id, amount, sum(amount) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM orders WHERE id < 12 ORDER BY id
SELECT id, first_value(amount) OVER (PARTITION BY customer_id ORDER BY id), last_value(amount) OVER (ORDER BY id), lag(amount, 2, 0.00) OVER (ORDER BY id), lead(amount) OVER (ORDER BY id) FROM orders WHERE id < 12 ORDER BY id
UNSUPPORTED SELECT id, lag(amount, 2, 0) OVER (ORDER BY id) FROM orders WHERE id < 12 ORDER BY id
SELECT status, count(*) FROM orders GROUP BY status HAVING bool_or(flag) ORDER BY 1
SELECT 1 AS one, 'x' AS x, NULL AS n, count(*) FROM orders
SELECT count(*) FROM orders WHERE created_at::date = day
SELECT count(*) FROM orders WHERE day - 1 < created_at::date
SELECT id, day + 7, day - 7, day - DATE '2025-01-01' FROM orders WHERE id < 6 ORDER BY id
SELECT id, created_at + interval '1 day 2 hours', created_at - interval '1 month' FROM orders WHERE id < 6 ORDER BY id
-- Differences of times compared and ordered as Postgres weighs intervals
SELECT count(*) FROM orders WHERE timestamptz '2026-06-01' - created_at > interval '100 days'
SELECT count(*) FROM orders WHERE timestamptz '2026-06-01' - created_at BETWEEN '1 mon' AND interval '1 year'
SELECT status, max(created_at) - min(created_at) > interval '2 mons' FROM orders GROUP BY status ORDER BY status
SELECT id, created_at - date_trunc('month', created_at) AS into_month FROM orders WHERE id < 200 ORDER BY into_month DESC, id LIMIT 12
SELECT count(*) FROM orders WHERE created_at >= '2025-03-10 12:00' AND created_at < '2025-03-17 08:30'
SELECT count(*) FROM orders WHERE created_at BETWEEN '2025-03-10 12:00' AND '2025-03-11'
SELECT count(*) FROM orders WHERE day >= '20250310' AND day IN ('2025-03-12', 'March 14, 2025')
SELECT count(*) FROM orders WHERE created_at > 'epoch' AND day < 'tomorrow'
SELECT count(*) FROM orders WHERE created_at >= '2025-02-30 12:00'
SELECT count(*) FROM orders WHERE status = '2025-03-10 12:00'

-- Joins, subqueries, set operations, windows and numerics
SELECT c.region, count(o.id), count(*) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id AND o.amount > 90 GROUP BY 1 ORDER BY 1
SELECT count(*) FROM orders o FULL JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL OR o.id IS NULL
SELECT o.status, c.region, sum(o.amount) FROM orders o JOIN customers c USING (id) GROUP BY 1, 2 ORDER BY 1, 2
SELECT count(*) FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE region IS NULL)
SELECT count(*) FROM orders WHERE customer_id NOT IN (SELECT id FROM customers WHERE id > 5)
SELECT id FROM orders WHERE id < 20 EXCEPT SELECT id FROM orders WHERE id % 3 = 0 ORDER BY 1
SELECT id FROM orders WHERE id < 10 INTERSECT SELECT customer_id FROM orders ORDER BY 1
SELECT status FROM orders WHERE id < 50 UNION SELECT region FROM customers ORDER BY 1
WITH m AS (SELECT customer_id, max(amount) AS top FROM orders GROUP BY 1) SELECT count(*) FROM orders o JOIN m ON m.customer_id = o.customer_id AND o.amount = m.top
SELECT id, amount, avg(amount) OVER (PARTITION BY status) FROM orders WHERE id < 10 ORDER BY id
SELECT id, ntile(4) OVER (ORDER BY id), ntile(3) OVER (PARTITION BY status ORDER BY id DESC), ntile(20) OVER (ORDER BY id) FROM orders WHERE id < 11 ORDER BY id
SELECT status, ntile(2) OVER (ORDER BY count(*), status) FROM orders GROUP BY status ORDER BY status
UNSUPPORTED SELECT id, ntile(customer_id) OVER (ORDER BY id) FROM orders WHERE id < 11 ORDER BY id
SELECT id, status, percent_rank() OVER (ORDER BY id), cume_dist() OVER (PARTITION BY status ORDER BY customer_id) FROM orders WHERE id < 40 ORDER BY id
SELECT status, percent_rank() OVER (ORDER BY count(*)), cume_dist() OVER (ORDER BY count(*) DESC) FROM orders GROUP BY status ORDER BY status
SELECT id, count(*) OVER (ORDER BY day RANGE BETWEEN INTERVAL '7 days' PRECEDING AND CURRENT ROW) FROM orders WHERE id < 30 ORDER BY id
SELECT id, row_number() OVER w, dense_rank() OVER w FROM orders WHERE id < 15 WINDOW w AS (PARTITION BY customer_id ORDER BY amount) ORDER BY id
SELECT date_trunc('month', created_at) AS m, sum(sum(amount)) OVER (ORDER BY date_trunc('month', created_at) ROWS UNBOUNDED PRECEDING) FROM orders GROUP BY 1 ORDER BY 1
SELECT status, count(*) * 100.0 / sum(count(*)) OVER () AS pct FROM orders GROUP BY 1 ORDER BY 1
SELECT amount * 1.1, amount::float8 * 2, amount + 0.005, -amount FROM orders WHERE id < 6 ORDER BY id
SELECT sum(amount) / 3, avg(amount)::numeric(10,3), round(avg(score)::numeric, 4) FROM orders
SELECT count(*) FROM orders WHERE amount > 50.005 AND amount <= 99.99
SELECT id, score, score * 2, score + 1e-10 FROM orders WHERE score IS NOT NULL AND id < 30 ORDER BY id
SELECT count(*) FROM orders WHERE created_at > (SELECT max(created_at) FROM orders) - interval '40 days'
SELECT (SELECT count(*) FROM customers), count(*) FROM orders
SELECT (SELECT max(region) FROM customers), count(*), (SELECT min(id) FROM customers) FROM orders
SELECT id, EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id) FROM orders o WHERE id < 5 ORDER BY id
SELECT id, NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.region = 'east') AS not_east FROM orders o WHERE id < 12 ORDER BY id
UNSUPPORTED SELECT id, EXISTS (SELECT 1 FROM orders o2 WHERE o2.customer_id = o.customer_id AND o2.id > o.id + 2390) AS later FROM orders o WHERE id < 8 OR id > 2395 ORDER BY id
SELECT EXISTS (SELECT 1 FROM customers WHERE region = 'nowhere') AS none, count(*) FROM orders
UNSUPPORTED SELECT id, EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id LIMIT 1) FROM orders o WHERE id < 5 ORDER BY id
UNSUPPORTED SELECT count(*) FROM orders WHERE (customer_id, status) IN (SELECT id, 'paid' FROM customers)
SELECT count(*) FROM orders WHERE flag IS NOT TRUE
SELECT count(*) FROM orders WHERE NOT flag
SELECT flag, count(*) FROM orders GROUP BY flag ORDER BY flag NULLS FIRST
SELECT count(*) FROM orders WHERE note = ''
SELECT count(*) FROM orders WHERE coalesce(note, '') = ''
-- Joins with the tiered table on the left: built on the dimension instead
SELECT c.region, count(*), sum(o.amount) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id AND c.region <> 'east' GROUP BY 1 ORDER BY 1
SELECT count(*), count(c.id), count(o.id) FROM orders o RIGHT JOIN customers c ON c.id = o.customer_id AND o.amount > 95
SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.region = 'west')
SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id % 97 = 0 ORDER BY o.id
-- Times of day
SELECT id, created_at::time, day::timestamp::time FROM orders WHERE id % 300 = 0 ORDER BY id
SELECT max(created_at::time) FROM orders WHERE created_at < now() - interval '60 days'
SELECT NULL::int AS n, NULL::text AS t, count(*) FROM orders WHERE id < 100
-- More joins and time bounds
SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.region = 'east' AND o.created_at >= TIMESTAMPTZ '2025-06-01 00:00:00+00' GROUP BY 1
SELECT c1.region, count(*) FROM orders o JOIN customers c1 ON c1.id = o.customer_id JOIN customers c2 ON c2.id = o.customer_id % 20 + 1 GROUP BY 1 ORDER BY 1
SELECT count(*) FROM orders a JOIN orders b ON b.id = a.id + 1 WHERE a.created_at < b.created_at
SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE amount > 95) ORDER BY 1
SELECT count(*), min(created_at) FROM orders WHERE created_at BETWEEN '2025-01-01' AND '2025-06-30 12:00:00'
SELECT count(*) FROM orders WHERE created_at = (SELECT max(created_at) FROM orders WHERE created_at < now() - interval '90 days')
SELECT count(*) FROM orders WHERE NOT (created_at < TIMESTAMPTZ '2025-09-01 00:00:00+00') AND created_at <= TIMESTAMPTZ '2025-10-01 00:00:00+00'
SELECT count(*) FROM orders WHERE created_at < TIMESTAMPTZ '2025-03-01 00:00:00+00' OR created_at > now() - interval '10 days'
SELECT count(*) FROM orders WHERE created_at > '2025-05-01'::date AND created_at < '2025-05-01'::date + 30
SELECT count(*) FROM orders WHERE day >= DATE '2025-02-01' AND day < DATE '2025-03-01' AND created_at >= TIMESTAMP '2025-01-15 00:00:00'
