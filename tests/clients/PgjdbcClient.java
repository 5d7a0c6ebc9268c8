// pgjdbc client for thermocline's client compatibility tests.
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGPASSWORD) to a fresh, empty database and prints a transcript that must be
// the same whether the server is PostgreSQL itself or thermocline in front of
// it. pgjdbc uses the extended protocol, switches a PreparedStatement to a
// named server-side statement with binary results from its 5th execution
// (prepareThreshold), runs portals with a row limit under setFetchSize,
// describes statements for metadata and queries the catalog for
// DatabaseMetaData. The transcript shows what pgjdbc decoded (class and
// value), result metadata, update counts, errors (SQLSTATE and diagnostics),
// notices and notifications; never pids, OIDs of user objects, the database
// name or the clock.
//
// Build: javac -cp /usr/share/java/postgresql.jar -d DIR PgjdbcClient.java
// Run it with tests/clients/run.sh pgjdbc (JVM time zone UTC, locale en_US).

import java.io.IOException;
import java.io.PrintStream;
import java.io.Reader;
import java.io.StringReader;
import java.io.StringWriter;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.math.BigDecimal;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Array;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ParameterMetaData;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Types;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.LocalTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.UUID;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PGInterval;
import org.postgresql.util.PGobject;
import org.postgresql.util.PSQLException;
import org.postgresql.util.PSQLWarning;
import org.postgresql.util.ServerErrorMessage;

public class PgjdbcClient {
    static final int FIRST_USER_OID = 16384;
    static PrintStream out;

    static void out(String s) {
        out.println(s);
    }

    static void section(String title) {
        out("");
        out("=== " + title);
    }

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static Connection connect(String... extra) throws SQLException {
        String host = env("PGHOST", "localhost");
        String port = env("PGPORT", "5432");
        String user = env("PGUSER", System.getProperty("user.name"));
        String db = env("PGDATABASE", user);
        if (host.contains(":") && !host.startsWith("[")) {
            host = "[" + host + "]";
        }
        Properties p = new Properties();
        p.setProperty("user", user);
        String password = System.getenv("PGPASSWORD");
        if (password != null) {
            p.setProperty("password", password);
        }
        for (int i = 0; i + 1 < extra.length; i += 2) {
            p.setProperty(extra[i], extra[i + 1]);
        }
        String url = "jdbc:postgresql://" + host + ":" + port + "/" + URLEncoder.encode(db, StandardCharsets.UTF_8);
        return DriverManager.getConnection(url, p);
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) {
            sb.append(String.format("%02x", x & 0xff));
        }
        return sb.toString();
    }

    static String show(Object v) throws SQLException {
        if (v == null) {
            return "null";
        }
        if (v instanceof byte[]) {
            return "byte[]:" + hex((byte[]) v);
        }
        if (v instanceof Array) {
            Array a = (Array) v;
            return "Array(" + a.getBaseTypeName() + "):" + show(a.getArray());
        }
        if (v instanceof Object[]) {
            Object[] arr = (Object[]) v;
            StringBuilder sb = new StringBuilder("[");
            for (int i = 0; i < arr.length; i++) {
                if (i > 0) {
                    sb.append(", ");
                }
                sb.append(show(arr[i]));
            }
            return v.getClass().getComponentType().getSimpleName() + "[]" + sb.append("]");
        }
        if (v instanceof PGobject) {
            PGobject o = (PGobject) v;
            return v.getClass().getSimpleName() + "(" + o.getType() + "):" + o.getValue();
        }
        if (v instanceof String) {
            return "String:" + quote((String) v);
        }
        return v.getClass().getSimpleName() + ":" + v;
    }

    static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '\n': sb.append("\\n"); break;
                case '\t': sb.append("\\t"); break;
                case '\\': sb.append("\\\\"); break;
                case '"': sb.append("\\\""); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        return sb.append('"').toString();
    }

    static String oidText(int oid) {
        return oid < FIRST_USER_OID ? Integer.toString(oid) : "<user type>";
    }

    static void printError(SQLException e) {
        if (e instanceof BatchUpdateException) {
            out("  client error BatchUpdateException: " + e.getMessage());
            SQLException next = e.getNextException();
            if (next != null && next != e) {
                printError(next);
            }
            return;
        }
        ServerErrorMessage sem = e instanceof PSQLException ? ((PSQLException) e).getServerErrorMessage() : null;
        if (sem == null) {
            // Raised by the driver itself.
            out("  client error " + e.getClass().getSimpleName() + " sqlstate=" + e.getSQLState() + ": " + e.getMessage());
            return;
        }
        out("  error sqlstate=" + sem.getSQLState() + " severity=" + sem.getSeverity());
        out("    message: " + sem.getMessage());
        field("detail", sem.getDetail());
        field("hint", sem.getHint());
        if (sem.getPosition() > 0) {
            field("position", Integer.toString(sem.getPosition()));
        }
        if (sem.getInternalPosition() > 0) {
            field("internal_position", Integer.toString(sem.getInternalPosition()));
        }
        field("internal_query", sem.getInternalQuery());
        field("where", sem.getWhere());
        field("schema", sem.getSchema());
        field("table", sem.getTable());
        field("column", sem.getColumn());
        field("datatype", sem.getDatatype());
        field("constraint", sem.getConstraint());
    }

    static void field(String name, String v) {
        if (v != null) {
            out("    " + name + ": " + v);
        }
    }

    static void printWarnings(SQLWarning w) {
        for (; w != null; w = w.getNextWarning()) {
            ServerErrorMessage sem = w instanceof PSQLWarning ? ((PSQLWarning) w).getServerErrorMessage() : null;
            if (sem != null) {
                String line = "  notice: " + sem.getSeverity() + " " + sem.getSQLState() + " " + sem.getMessage();
                if (sem.getDetail() != null) {
                    line += " | detail: " + sem.getDetail();
                }
                if (sem.getHint() != null) {
                    line += " | hint: " + sem.getHint();
                }
                out(line);
            } else {
                out("  warning " + w.getSQLState() + ": " + w.getMessage());
            }
        }
    }

    static void warnings(Statement st, Connection conn) throws SQLException {
        if (st != null) {
            printWarnings(st.getWarnings());
            st.clearWarnings();
        }
        printWarnings(conn.getWarnings());
        conn.clearWarnings();
    }

    static void printMeta(ResultSetMetaData md) throws SQLException {
        for (int i = 1; i <= md.getColumnCount(); i++) {
            out("  column " + md.getColumnLabel(i) + ": type=" + md.getColumnType(i) + " typeName=" + md.getColumnTypeName(i)
                + " class=" + md.getColumnClassName(i) + " precision=" + md.getPrecision(i) + " scale=" + md.getScale(i)
                + " displaySize=" + md.getColumnDisplaySize(i) + " nullable=" + md.isNullable(i)
                + " table=" + md.getTableName(i) + " autoIncrement=" + md.isAutoIncrement(i));
        }
    }

    static void printRows(ResultSet rs, boolean describe) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        if (describe) {
            printMeta(md);
        }
        int n = 0;
        while (rs.next()) {
            n++;
            StringBuilder sb = new StringBuilder("  row:");
            for (int i = 1; i <= md.getColumnCount(); i++) {
                sb.append(i == 1 ? " " : ", ").append(md.getColumnLabel(i)).append('=');
                try {
                    Object o = rs.getObject(i);
                    sb.append(show(o));
                    if (o != null && !(o instanceof String)) {
                        sb.append(" | ").append(quote(rs.getString(i)));
                    }
                } catch (SQLException e) {
                    sb.append("<").append(e.getClass().getSimpleName()).append(" ").append(e.getSQLState())
                        .append(": ").append(e.getMessage()).append(">");
                }
            }
            out(sb.toString());
        }
        out("  (" + n + " rows)");
    }

    static void printResults(Statement st, boolean isResultSet, boolean describe) throws SQLException {
        while (true) {
            if (isResultSet) {
                try (ResultSet rs = st.getResultSet()) {
                    printRows(rs, describe);
                }
            } else {
                int count = st.getUpdateCount();
                if (count == -1) {
                    break;
                }
                out("  update count: " + count);
            }
            isResultSet = st.getMoreResults();
        }
    }

    static void exec(Connection conn, String sql) throws SQLException {
        exec(conn, sql, true);
    }

    static void exec(Connection conn, String sql, boolean describe) throws SQLException {
        out("> " + sql);
        try (Statement st = conn.createStatement()) {
            try {
                boolean isRs = st.execute(sql);
                warnings(st, conn);
                printResults(st, isRs, describe);
            } catch (SQLException e) {
                warnings(st, conn);
                printError(e);
            }
        }
    }

    interface Binder {
        void bind(PreparedStatement ps) throws SQLException;
    }

    static void execPrepared(Connection conn, String sql, String shownArgs, Binder binder, boolean describe)
            throws SQLException {
        out("> " + sql + (shownArgs == null ? "" : "  -- args " + shownArgs));
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            try {
                binder.bind(ps);
                boolean isRs = ps.execute();
                warnings(ps, conn);
                printResults(ps, isRs, describe);
            } catch (SQLException e) {
                warnings(ps, conn);
                printError(e);
            }
        }
    }

    static String sha256(String s) throws Exception {
        return hex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
    }

    static void showNotifications(Connection conn, int expected) throws SQLException {
        // A notification comes after the ReadyForQuery of the statement that
        // caused it: read on until the expected number is there.
        PGConnection pg = conn.unwrap(PGConnection.class);
        List<PGNotification> got = new ArrayList<>();
        try (Statement st = conn.createStatement()) {
            st.execute("SELECT 1");
        }
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (true) {
            // 0 would block until a notification arrives: never wait less than 1 ms.
            PGNotification[] ns = pg.getNotifications(got.size() < expected ? 100 : 1);
            if (ns != null) {
                for (PGNotification n : ns) {
                    got.add(n);
                }
            }
            if (got.size() >= expected || System.nanoTime() > deadline) {
                break;
            }
        }
        if (expected == 0) {
            PGNotification[] ns = pg.getNotifications(200);
            if (ns != null) {
                for (PGNotification n : ns) {
                    got.add(n);
                }
            }
        }
        for (PGNotification n : got) {
            out("  notification: channel=" + quote(n.getName()) + " payload=" + quote(n.getParameter()));
        }
        out("  (" + got.size() + " notifications)");
    }

    static final String SAMPLE_ROWS = String.join("\n",
        "INSERT INTO samples VALUES",
        " (1, 1, 2, 3, 12345.678901, 3.14159265358979323846264338327950288419716939937510,",
        "  1.5, 2.25, true, 'hello', 'varchar', 'ab', '\\x00ff10deadbeef',",
        "  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.123456',",
        "  '2024-02-29 13:14:15.123456', '2024-06-30 23:59:59.999999+02',",
        "  '1 year 2 mons 3 days 04:05:06.789', '{\"a\": [1, 2.50, null], \"b\": \"x\"}',",
        "  '{\"b\": \"x\", \"a\": [1, 2.50, null]}', '{1,NULL,3}', '{\"a b\",\"c,d\",NULL,\"\\\"q\\\"\"}', 'happy'),",
        " (2, -32768, -2147483648, 9223372036854775807, -99999999999999.999999,",
        "  -12345678901234567890.123456789012345678901234567890,",
        "  'NaN', 'Infinity', false, E'tab\\there\\nnewline \\\\ backslash ''quote'' h\\u00e9llo \\u2603',",
        "  'ten chars!', 'abcde', '\\x', '00000000-0000-0000-0000-000000000000', '0001-01-01',",
        "  '00:00:00', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '-1 days +02:03:04',",
        "  '[]', '{}', '{}', '{}', 'sad'),",
        " (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,",
        "  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)");

    public static void main(String[] args) throws Exception {
        out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        try {
            run();
        } catch (Throwable t) {
            out.flush();
            t.printStackTrace();
            System.exit(1);
        }
        out.flush();
        System.exit(0);
    }

    static void run() throws Exception {
        Connection conn = connect();
        DatabaseMetaData dbmd = conn.getMetaData();
        out("pgjdbc " + dbmd.getDriverVersion() + ", JDBC " + dbmd.getJDBCMajorVersion() + "." + dbmd.getJDBCMinorVersion()
            + ", product " + dbmd.getDatabaseProductName());
        PGConnection pgconn = conn.unwrap(PGConnection.class);

        section("server");
        exec(conn, "SELECT current_setting('server_version_num')::int / 10000 AS server_major");
        exec(conn, "SHOW TimeZone");
        exec(conn, "SELECT current_setting('extra_float_digits') AS extra_float_digits,"
            + " current_setting('DateStyle') AS datestyle, current_setting('client_encoding') AS client_encoding");
        out("  isValid(5): " + conn.isValid(5));

        section("schema");
        exec(conn, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
        exec(conn, "CREATE TABLE samples (\n"
            + "    id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, n20 numeric(20,6), n numeric,\n"
            + "    f4 float4, f8 float8, b bool, t text, vc varchar(10), c char(5), by bytea, u uuid,\n"
            + "    d date, tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb,\n"
            + "    ia int4[], ta text[], m mood)");
        exec(conn, "COMMENT ON TABLE samples IS 'one column per type a client decodes'");
        exec(conn, "CREATE TABLE events (\n"
            + "    id serial PRIMARY KEY, name text NOT NULL UNIQUE,\n"
            + "    qty int4 CHECK (qty >= 0) DEFAULT 0,\n"
            + "    at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00')");
        exec(conn, "CREATE TABLE copy_target (id int4, t text, n numeric, ts timestamp, ia int4[])");
        exec(conn, "CREATE VIEW sample_moods AS SELECT id, t, m FROM samples");

        section("insert: literals");
        exec(conn, SAMPLE_ROWS);

        section("insert: parameters");
        String insert = "INSERT INTO samples (id, i2, i4, i8, n20, n, f4, f8, b, t, vc, c, by, u, d, tm, ts, tstz, iv, j, jb, ia, ta, m)"
            + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        try (PreparedStatement ps = conn.prepareStatement(insert)) {
            out("> " + insert);
            ParameterMetaData pmd = ps.getParameterMetaData();
            for (int i = 1; i <= pmd.getParameterCount(); i++) {
                out("  parameter " + i + ": type=" + pmd.getParameterType(i) + " typeName=" + pmd.getParameterTypeName(i)
                    + " class=" + pmd.getParameterClassName(i));
            }
            ps.setInt(1, 4);
            ps.setShort(2, (short) 7);
            ps.setInt(3, -70000);
            ps.setLong(4, 1L << 40);
            ps.setBigDecimal(5, new BigDecimal("0.000001"));
            ps.setBigDecimal(6, new BigDecimal("123456789012345678901234567890.000000000000000000001"));
            ps.setFloat(7, 0.1f);
            ps.setDouble(8, 0.1 + 0.2);
            ps.setBoolean(9, true);
            ps.setString(10, "param \u00e9 \ud834\udd1e");
            ps.setString(11, "vc");
            ps.setString(12, "xyz");
            ps.setBytes(13, new byte[] {0, 1, (byte) 0xfe, (byte) 0xff});
            ps.setObject(14, UUID.fromString("12345678-1234-5678-1234-567812345678"));
            ps.setObject(15, LocalDate.of(2000, 2, 29));
            ps.setObject(16, LocalTime.of(23, 59, 59, 500_000_000));
            ps.setObject(17, LocalDateTime.of(2001, 9, 9, 1, 46, 40));
            ps.setObject(18, OffsetDateTime.of(2024, 1, 1, 12, 0, 0, 0, ZoneOffset.ofHours(-3)));
            ps.setObject(19, new PGInterval(0, 0, -2, 1, 0, 0.000005));
            PGobject json = new PGobject();
            json.setType("json");
            json.setValue("{\"k\": [1, \"two\", null]}");
            ps.setObject(20, json);
            PGobject jsonb = new PGobject();
            jsonb.setType("jsonb");
            jsonb.setValue("{\"z\": 1, \"a\": {\"nested\": true}}");
            ps.setObject(21, jsonb);
            ps.setArray(22, conn.createArrayOf("int4", new Integer[] {10, null, -30}));
            ps.setArray(23, conn.createArrayOf("text", new String[] {"x", "y z", null, "", "quote\"s", "{brace}"}));
            ps.setObject(24, "ok", Types.OTHER);
            out("  update count: " + ps.executeUpdate());
            ps.setInt(1, 5);
            for (int i = 2; i <= 24; i++) {
                ps.setNull(i, Types.NULL);
            }
            ps.setBigDecimal(5, null);
            ps.setDouble(7, Double.NaN);
            ps.setDouble(8, Double.NEGATIVE_INFINITY);
            ps.setString(10, "");
            ps.setBytes(13, new byte[0]);
            out("  update count: " + ps.executeUpdate());
        } catch (SQLException e) {
            printError(e);
        }
        // setString sends varchar: the server will not cast it to date on its own.
        execPrepared(conn, "INSERT INTO samples (id, d) VALUES (?, ?)", "(6, \"2020-02-02\" as varchar)", ps -> {
            ps.setInt(1, 6);
            ps.setString(2, "2020-02-02");
        }, true);
        execPrepared(conn, "INSERT INTO samples (id, i2, n, d, tstz, iv, m) VALUES (?::int4, ?::int2, ?::numeric, ?::date, ?::timestamptz, ?::interval, ?::mood)",
            "strings with casts", ps -> {
                String[] v = {"6", "12", "1e-20", "2020-02-02", "2020-02-02 02:02:02+05:30", "1 day 02:00", "sad"};
                for (int i = 0; i < v.length; i++) {
                    ps.setString(i + 1, v[i]);
                }
            }, true);
        try (Connection loose = connect("stringtype", "unspecified")) {
            execPrepared(loose, "INSERT INTO samples (id, f8, d, ts, m) VALUES (?, ?, ?, ?, ?)", "stringtype=unspecified",
                ps -> {
                    ps.setInt(1, 7);
                    ps.setDouble(2, 1e-310);
                    ps.setString(3, "1999-01-08");
                    ps.setString(4, "1900-01-01 00:00:00");
                    ps.setString(5, "happy");
                }, true);
        }
        out("> INSERT INTO events (name, qty) VALUES (?, ?)  -- RETURN_GENERATED_KEYS");
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO events (name, qty) VALUES (?, ?)",
                Statement.RETURN_GENERATED_KEYS)) {
            ps.setString(1, "first");
            ps.setInt(2, 1);
            out("  update count: " + ps.executeUpdate());
            try (ResultSet keys = ps.getGeneratedKeys()) {
                printRows(keys, false);
            }
        }
        out("> batch INSERT INTO events (name, qty) VALUES (?, ?) x3");
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO events (name, qty) VALUES (?, ?)")) {
            String[] names = {"a", "b", "c"};
            for (int i = 0; i < names.length; i++) {
                ps.setString(1, names[i]);
                ps.setInt(2, i + 1);
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            out("  batch counts: " + java.util.Arrays.toString(counts));
            out("> batch with a duplicate in the middle");
            for (String name : new String[] {"d", "a", "e"}) {
                ps.setString(1, name);
                ps.setInt(2, 9);
                ps.addBatch();
            }
            try {
                ps.executeBatch();
            } catch (SQLException e) {
                printError(e);
            }
        }
        exec(conn, "SELECT id, name, qty FROM events ORDER BY id", false);

        section("select (text results)");
        exec(conn, "SELECT * FROM samples ORDER BY id");
        exec(conn, "SELECT f4, f8, f8::text AS f8_text, n FROM samples WHERE id IN (2, 4, 5, 7) ORDER BY id");
        exec(conn, "SELECT '{{1,2},{3,4}}'::int4[] AS matrix, ARRAY['happy', 'sad']::mood[] AS moods,"
            + " ARRAY[1.5, NULL]::numeric[] AS nums, '[0:1]={7,8}'::int4[] AS lower_bound");
        String[] edges = {"'infinity'::date", "'-infinity'::timestamp", "'infinity'::timestamptz",
            "'0044-03-15 BC'::date", "'294276-12-31 23:59:59.999999'::timestamp", "'NaN'::numeric",
            "'Infinity'::numeric", "'-0'::float8", "'24:00:00'::time", "'1 year'::interval * 10000",
            "'\\x'::bytea", "'(1,2)'::point", "'192.168.0.1/24'::inet", "'12:34:56+05'::timetz", "B'1011'::bit(4)"};
        for (String edge : edges) {
            exec(conn, "SELECT " + edge + " AS v", false);
        }

        section("same PreparedStatement 10 times (server-prepared from the 5th, binary results after)");
        String pick = "SELECT id, i2, i4, i8, n20, n, f4, f8, b, t, vc, c, by, u, d, tm, ts, tstz, iv, j, jb, ia, ta, m"
            + " FROM samples WHERE id = ?";
        try (PreparedStatement ps = conn.prepareStatement(pick)) {
            out("  prepareThreshold: " + ps.unwrap(PGStatement.class).getPrepareThreshold());
            int[] ids = {1, 2, 4, 7, 3};
            for (int i = 0; i < 10; i++) {
                int id = ids[i % ids.length];
                out("> " + pick + "  -- args (" + id + ")  run " + (i + 1));
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    printRows(rs, i == 0 || i == 5);
                }
                out("  server prepared: " + ps.unwrap(PGStatement.class).isUseServerPrepare());
            }
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int8 + 1 AS next, ?::text AS echoed")) {
            for (int i = 0; i < 7; i++) {
                ps.setLong(1, Long.MAX_VALUE - 10 + i);
                ps.setString(2, "run " + (i + 1));
                out("> SELECT ?::int8 + 1 AS next, ?::text AS echoed  -- run " + (i + 1));
                try (ResultSet rs = ps.executeQuery()) {
                    printRows(rs, false);
                }
            }
        }

        section("metadata of a described statement");
        try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM samples WHERE 1=0")) {
            out("> getMetaData() of SELECT * FROM samples WHERE 1=0 (not executed)");
            printMeta(ps.getMetaData());
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT s.id, s.m, e.name FROM sample_moods s, events e WHERE s.id = ? AND e.qty > ?")) {
            out("> getParameterMetaData() / getMetaData() of a join on a view");
            ParameterMetaData pmd = ps.getParameterMetaData();
            for (int i = 1; i <= pmd.getParameterCount(); i++) {
                out("  parameter " + i + ": typeName=" + pmd.getParameterTypeName(i));
            }
            printMeta(ps.getMetaData());
        }

        section("DatabaseMetaData");
        out("> getTables(null, public, %, TABLE/VIEW)");
        try (ResultSet rs = dbmd.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
            while (rs.next()) {
                out("  table " + rs.getString("TABLE_NAME") + " type=" + rs.getString("TABLE_TYPE")
                    + " remarks=" + rs.getString("REMARKS"));
            }
        }
        out("> getColumns(null, public, samples, %)");
        try (ResultSet rs = dbmd.getColumns(null, "public", "samples", "%")) {
            while (rs.next()) {
                out("  column " + rs.getInt("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME")
                    + " dataType=" + rs.getInt("DATA_TYPE") + " typeName=" + rs.getString("TYPE_NAME")
                    + " size=" + rs.getInt("COLUMN_SIZE") + " decimalDigits=" + rs.getInt("DECIMAL_DIGITS")
                    + " nullable=" + rs.getString("IS_NULLABLE") + " default=" + rs.getString("COLUMN_DEF")
                    + " autoincrement=" + rs.getString("IS_AUTOINCREMENT"));
            }
        }
        out("> getColumns(null, public, events, %)");
        try (ResultSet rs = dbmd.getColumns(null, "public", "events", "%")) {
            while (rs.next()) {
                out("  column " + rs.getInt("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME")
                    + " typeName=" + rs.getString("TYPE_NAME") + " size=" + rs.getInt("COLUMN_SIZE")
                    + " nullable=" + rs.getString("IS_NULLABLE") + " default=" + rs.getString("COLUMN_DEF")
                    + " autoincrement=" + rs.getString("IS_AUTOINCREMENT"));
            }
        }
        out("> getPrimaryKeys(null, public, events)");
        try (ResultSet rs = dbmd.getPrimaryKeys(null, "public", "events")) {
            while (rs.next()) {
                out("  pk " + rs.getString("PK_NAME") + " column=" + rs.getString("COLUMN_NAME") + " seq=" + rs.getInt("KEY_SEQ"));
            }
        }
        out("> getIndexInfo(null, public, events)");
        try (ResultSet rs = dbmd.getIndexInfo(null, "public", "events", false, false)) {
            while (rs.next()) {
                out("  index " + rs.getString("INDEX_NAME") + " nonUnique=" + rs.getBoolean("NON_UNIQUE")
                    + " column=" + rs.getString("COLUMN_NAME") + " position=" + rs.getInt("ORDINAL_POSITION"));
            }
        }

        section("setFetchSize with autocommit off (portal with a row limit)");
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement("SELECT g, md5(g::text) AS h FROM generate_series(1, 10) g")) {
            ps.setFetchSize(3);
            out("> SELECT g, md5(g::text) AS h FROM generate_series(1, 10) g  -- fetchSize 3");
            try (ResultSet rs = ps.executeQuery()) {
                printRows(rs, true);
            }
        }
        try (Statement st = conn.createStatement()) {
            st.setFetchSize(2);
            out("> SELECT id, t, m FROM samples ORDER BY id  -- fetchSize 2, plain Statement");
            try (ResultSet rs = st.executeQuery("SELECT id, t, m FROM samples ORDER BY id")) {
                printRows(rs, false);
            }
        }
        conn.commit();
        conn.setAutoCommit(true);

        section("time zones");
        for (String tz : new String[] {"America/New_York", "Asia/Kolkata", "UTC"}) {
            exec(conn, "SET TimeZone = '" + tz + "'");
            out("> SELECT id, tstz FROM samples WHERE tstz IS NOT NULL ORDER BY id  -- getObject(OffsetDateTime) and getString");
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT id, tstz FROM samples WHERE tstz IS NOT NULL ORDER BY id")) {
                while (rs.next()) {
                    out("  row: id=" + rs.getInt(1) + " offsetDateTime=" + rs.getObject(2, OffsetDateTime.class)
                        + " timestamp=" + rs.getTimestamp(2) + " string=" + rs.getString(2));
                }
            }
        }
        exec(conn, "SET IntervalStyle = 'iso_8601'");
        exec(conn, "SELECT iv, iv::text AS iv_text FROM samples WHERE id IN (1, 2) ORDER BY id", false);
        exec(conn, "RESET IntervalStyle");

        section("errors");
        exec(conn, "SELECT 1 / 0");
        execPrepared(conn, "INSERT INTO events (name, qty) VALUES (?, ?)", "('first', 1)", ps -> {
            ps.setString(1, "first");
            ps.setInt(2, 1);
        }, true);
        execPrepared(conn, "INSERT INTO events (name, qty) VALUES (?, ?)", "('negative', -1)", ps -> {
            ps.setString(1, "negative");
            ps.setInt(2, -1);
        }, true);
        exec(conn, "SELEC 1");
        exec(conn, "SELECT id FROM samples WHERE");
        exec(conn, "SELECT * FROM no_such_table");
        execPrepared(conn, "SELECT ?::int4", "('not a number')", ps -> ps.setString(1, "not a number"), true);
        exec(conn, "SELECT 'nope'::mood");
        execPrepared(conn, "SELECT ?::int4, ?::int4", "(1) one missing", ps -> ps.setInt(1, 1), true);
        exec(conn, "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7 USING ERRCODE = 'P0001', HINT = 'raised on purpose'; END $$");
        exec(conn, "SELECT 'fine again' AS status");

        section("transactions");
        conn.setAutoCommit(false);
        exec(conn, "INSERT INTO events (name, qty) VALUES ('in failed tx', 1)");
        exec(conn, "SELECT 1 / 0");
        exec(conn, "SELECT 'ignored' AS status");
        out("> rollback()");
        conn.rollback();
        exec(conn, "SELECT count(*) AS failed_rows FROM events WHERE name = 'in failed tx'");
        exec(conn, "INSERT INTO events (name, qty) VALUES ('kept 1', 1)");
        out("> setSavepoint(\"s1\")");
        Savepoint s1 = conn.setSavepoint("s1");
        exec(conn, "INSERT INTO events (name, qty) VALUES ('kept 1', 2)");
        out("> rollback(s1)");
        conn.rollback(s1);
        out("> setSavepoint()");
        Savepoint unnamed = conn.setSavepoint();
        exec(conn, "INSERT INTO events (name, qty) VALUES ('kept 2', 2)");
        out("> releaseSavepoint()");
        conn.releaseSavepoint(unnamed);
        out("> commit()");
        conn.commit();
        conn.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
        exec(conn, "SHOW transaction_isolation");
        conn.rollback();
        conn.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
        conn.setAutoCommit(true);
        try (Connection auto = connect("autosave", "always")) {
            out("> (autosave=always) a failing statement inside a transaction, then go on");
            auto.setAutoCommit(false);
            exec(auto, "INSERT INTO events (name, qty) VALUES ('kept 3', 3)");
            exec(auto, "INSERT INTO events (name, qty) VALUES ('kept 3', 3)");
            exec(auto, "INSERT INTO events (name, qty) VALUES ('kept 4', 4)");
            auto.commit();
        }
        exec(conn, "SELECT id, name, qty, at FROM events ORDER BY id", false);

        section("multi-statement queries");
        exec(conn, "SELECT 1 AS a; SELECT 2 AS b");
        exec(conn, "CREATE TABLE multi (x int); INSERT INTO multi VALUES (1), (2); SELECT sum(x) AS total FROM multi; DROP TABLE multi");
        exec(conn, "SELECT 'ok' AS first; SELECT 1 / 0; SELECT 'not reached'");
        try (Connection simple = connect("preferQueryMode", "simple")) {
            out("  (preferQueryMode=simple)");
            exec(simple, "SELECT 1 AS a; SELECT 'two' AS b");
            execPrepared(simple, "SELECT ?::int4 AS i, ?::text AS t, ?::numeric AS n, ? AS d", "(5, it's, 1.10, 2024-05-06)", ps -> {
                ps.setInt(1, 5);
                ps.setString(2, "it's");
                ps.setBigDecimal(3, new BigDecimal("1.10"));
                ps.setObject(4, LocalDate.of(2024, 5, 6));
            }, true);
            exec(simple, "SELECT * FROM samples WHERE id <= 2 ORDER BY id", false);
        }

        section("copy (CopyManager)");
        CopyManager cm = pgconn.getCopyAPI();
        out("> copyIn COPY copy_target (id, t, n, ts, ia) FROM STDIN (text)");
        long n = cm.copyIn("COPY copy_target (id, t, n, ts, ia) FROM STDIN",
            new StringReader("1\ttab\\there\t1.25\t2020-01-02 03:04:05\t{1,NULL}\n2\t\\N\t\\N\t\\N\t\\N\n3\tback\\\\slash \u2603\t-7\t\\N\t{}\n"));
        out("  rows: " + n);
        out("> copyIn COPY copy_target (id, t) FROM STDIN (FORMAT csv)");
        n = cm.copyIn("COPY copy_target (id, t) FROM STDIN (FORMAT csv)",
            new java.io.ByteArrayInputStream("6,\"quoted, comma\"\n7,plain\n".getBytes(StandardCharsets.UTF_8)));
        out("  rows: " + n);
        out("> copyIn with a bad row");
        try {
            cm.copyIn("COPY copy_target (id, t) FROM STDIN", new StringReader("8\tfine\noops\tbad id\n"));
        } catch (SQLException e) {
            printError(e);
        }
        out("> copyIn whose source fails (the driver sends CopyFail)");
        try {
            cm.copyIn("COPY copy_target (id, t) FROM STDIN", new Reader() {
                boolean sent;

                @Override
                public int read(char[] buf, int off, int len) throws IOException {
                    if (!sent) {
                        sent = true;
                        String row = "9\tnever\n";
                        row.getChars(0, row.length(), buf, off);
                        return row.length();
                    }
                    throw new IOException("source failed");
                }

                @Override
                public void close() {
                }
            });
        } catch (SQLException e) {
            printError(e);
        } catch (IOException e) {
            out("  client error IOException: " + e.getMessage());
        }
        exec(conn, "SELECT 'usable after COPY' AS status", false);
        out("> copyOut COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)");
        StringWriter w = new StringWriter();
        n = cm.copyOut("COPY (SELECT id, t, n, ts, ia FROM copy_target ORDER BY id) TO STDOUT (FORMAT csv, HEADER)", w);
        for (String line : w.toString().split("\n", -1)) {
            if (!line.isEmpty()) {
                out("  | " + line);
            }
        }
        out("  rows: " + n);
        out("> copyOut COPY copy_target TO STDOUT (FORMAT binary)");
        java.io.ByteArrayOutputStream bin = new java.io.ByteArrayOutputStream();
        n = cm.copyOut("COPY (SELECT * FROM copy_target ORDER BY id) TO STDOUT (FORMAT binary)", bin);
        out("  rows: " + n + " bytes: " + bin.size() + " sha256=" + hex(MessageDigest.getInstance("SHA-256").digest(bin.toByteArray())));

        section("notices");
        exec(conn, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$");
        exec(conn, "DO $$ BEGIN RAISE NOTICE 'with detail' USING DETAIL = 'the detail', HINT = 'the hint'; END $$");
        exec(conn, "CREATE TABLE IF NOT EXISTS events (id int4)");
        exec(conn, "DROP TABLE IF EXISTS no_such_table");
        exec(conn, "SELECT 'after notices' AS status");

        section("listen / notify");
        exec(conn, "LISTEN jobs");
        exec(conn, "LISTEN \"Mixed Case\"");
        exec(conn, "NOTIFY jobs, 'first payload'");
        execPrepared(conn, "SELECT pg_notify('jobs', ?)", "('second payload \u00e9')", ps -> ps.setString(1, "second payload \u00e9"), true);
        exec(conn, "NOTIFY \"Mixed Case\", ''");
        showNotifications(conn, 3);
        conn.setAutoCommit(false);
        exec(conn, "NOTIFY jobs, 'committed'");
        exec(conn, "NOTIFY jobs, 'committed'");
        exec(conn, "NOTIFY jobs, 'committed too'");
        conn.commit();
        showNotifications(conn, 2);
        exec(conn, "NOTIFY jobs, 'rolled back'");
        conn.rollback();
        conn.setAutoCommit(true);
        try (Connection other = connect()) {
            out("> (second connection) NOTIFY jobs, 'from another session'");
            try (Statement st = other.createStatement()) {
                st.execute("NOTIFY jobs, 'from another session'");
            }
        }
        showNotifications(conn, 1);
        exec(conn, "UNLISTEN *");
        exec(conn, "NOTIFY jobs, 'nobody listens'");
        showNotifications(conn, 0);

        section("cancel");
        out("> SELECT pg_sleep(10)  -- setQueryTimeout(1): the driver sends a CancelRequest");
        long started = System.nanoTime();
        try (Statement st = conn.createStatement()) {
            st.setQueryTimeout(1);
            try (ResultSet rs = st.executeQuery("SELECT pg_sleep(10)")) {
                out("  not cancelled");
            } catch (SQLException e) {
                printError(e);
            }
        }
        exec(conn, "SELECT 'still usable' AS status", false);
        out("  returned within 5 s: " + (System.nanoTime() - started < 5_000_000_000L));

        section("large values");
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT g, md5(g::text) FROM generate_series(1, 20000) g")) {
            out("> SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
            StringBuilder sb = new StringBuilder();
            int rows = 0;
            while (rs.next()) {
                sb.append(rs.getInt(1)).append(':').append(rs.getString(2)).append('\n');
                rows++;
            }
            out("  rows=" + rows + " sha256=" + sha256(sb.toString()));
        }
        byte[] bigIn = new byte[256 * 4096];
        for (int i = 0; i < bigIn.length; i++) {
            bigIn[i] = (byte) i;
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT repeat('abc', 400000) AS big, ?::bytea AS echoed")) {
            out("> SELECT repeat('abc', 400000) AS big, ?::bytea AS echoed");
            ps.setBytes(1, bigIn);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                String big = rs.getString(1);
                byte[] echoed = rs.getBytes(2);
                out("  big: len=" + big.length() + " sha256=" + sha256(big));
                out("  echoed bytea equal: " + java.util.Arrays.equals(bigIn, echoed) + " len=" + echoed.length);
            }
        }

        section("end");
        exec(conn, "SELECT 'done' AS status", false);
        conn.close();
        out("  closed: " + conn.isClosed());
    }
}
