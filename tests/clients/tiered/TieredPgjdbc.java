import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * Reads of a tiered table with pgjdbc: every statement of queries.txt is
 * prepared and run 7 times, so from the 5th run pgjdbc uses a named server
 * statement and from the 6th binary results; one more is read through a
 * portal 100 rows at a time. Prints every value as pgjdbc decoded it.
 */
public class TieredPgjdbc {
    static final Object[] PARAMS = {
        null, 97L, OffsetDateTime.of(2025, 6, 1, 0, 0, 0, 0, ZoneOffset.UTC), null, 15, 7L,
    };

    static String show(Object v) {
        if (v == null) return "null";
        return v.getClass().getSimpleName() + ":" + v;
    }

    static void printQuery(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            print(rs);
        }
    }

    static void print(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<String> cols = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            cols.add(md.getColumnLabel(i) + " " + md.getColumnTypeName(i) + " from " + md.getTableName(i));
        }
        System.out.println("  columns: " + String.join(", ", cols));
        while (rs.next()) {
            List<String> vals = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                vals.add(show(rs.getObject(i)));
            }
            System.out.println("  " + String.join(" | ", vals));
        }
    }

    public static void main(String[] args) throws Exception {
        String host = System.getenv().getOrDefault("PGHOST", "localhost");
        String port = System.getenv().getOrDefault("PGPORT", "5432");
        String db = System.getenv("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", System.getenv().getOrDefault("PGUSER", "postgres"));
        props.setProperty("sslmode", "disable");
        Path dir = Path.of(args[0]);
        List<String> queries = new ArrayList<>();
        for (String line : Files.readAllLines(dir.resolve("queries.txt"), StandardCharsets.UTF_8)) {
            if (!line.isBlank()) queries.add(line.strip().replace("$1", "?"));
        }
        try (Connection conn = DriverManager.getConnection("jdbc:postgresql://" + host + ":" + port + "/" + db, props)) {
            for (int q = 0; q < queries.size(); q++) {
                System.out.println("> " + queries.get(q));
                try (PreparedStatement ps = conn.prepareStatement(queries.get(q))) {
                    for (int run = 1; run <= 7; run++) {
                        if (PARAMS[q] != null) ps.setObject(1, PARAMS[q]);
                        try (ResultSet rs = ps.executeQuery()) {
                            if (run == 1 || run == 7) {
                                System.out.println(" run " + run);
                                print(rs);
                            }
                        }
                    }
                }
            }
            System.out.println("=== CopyManager.copyOut in CSV");
            java.io.ByteArrayOutputStream copied = new java.io.ByteArrayOutputStream();
            long n = conn.unwrap(org.postgresql.PGConnection.class).getCopyAPI().copyOut(
                "COPY (SELECT id, created_at, amount, status, note FROM orders WHERE id % 97 = 0 ORDER BY id) "
                    + "TO STDOUT (FORMAT csv, HEADER)", copied);
            System.out.println("  " + n + " rows");
            System.out.print(copied.toString(StandardCharsets.UTF_8));
            System.out.println("=== INSERT … SELECT with a parameter");
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TEMP TABLE per_customer (customer_id int, n bigint)");
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO per_customer SELECT customer_id, count(*) FROM orders WHERE id % ? = 0 GROUP BY 1")) {
                ps.setInt(1, 3);
                System.out.println("  " + ps.executeUpdate() + " rows inserted");
            }
            printQuery(conn, "SELECT * FROM per_customer ORDER BY 1");
            System.out.println("=== UPDATE … FROM with a parameter");
            try (PreparedStatement ps = conn.prepareStatement(
                    "UPDATE per_customer p SET n = -p.n FROM orders o "
                        + "WHERE o.customer_id = p.customer_id AND o.id % 100 = ? AND o.id > 500")) {
                ps.setInt(1, 7);
                System.out.println("  " + ps.executeUpdate() + " rows updated");
            }
            printQuery(conn, "SELECT * FROM per_customer ORDER BY 1");
            System.out.println("=== a portal read 100 rows at a time");
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement(queries.get(1))) {
                ps.setFetchSize(100);
                ps.setObject(1, 3L);
                int rows = 0;
                long sum = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
                System.out.println("  " + rows + " rows, ids sum to " + sum);
            }
            conn.commit();
        } catch (SQLException e) {
            System.out.println("error " + e.getSQLState() + ": " + e.getMessage());
        }
    }
}
