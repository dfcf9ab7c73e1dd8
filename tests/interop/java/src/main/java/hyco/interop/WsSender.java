package hyco.interop;

import com.microsoft.azure.relay.HybridConnectionClient;
import com.microsoft.azure.relay.TokenProvider;
import com.microsoft.azure.relay.WebSocketChannel;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import org.json.JSONObject;

/**
 * Sender on the official Java SDK: sends each stdin line and reports the listener's answer to it.
 *
 * <pre>java hyco.interop.WsSender sb://HOST:PORT/PATH KEY_NAME KEY</pre>
 *
 * stdin: JSON lines {"type":"text","data":"..."} or {"type":"binary","data":"BASE64"}; each is sent, then one
 * message of the same type is read back and printed as a "message" event. At EOF it closes and prints "close".
 * A refused connection prints an "error" event (exception type and message) and exits 1.
 */
public final class WsSender {
    private WsSender() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            Events.usage("WsSender sb://HOST:PORT/PATH KEY_NAME KEY");
        }
        TokenProvider tokens = TokenProvider.createSharedAccessSignatureTokenProvider(args[1], args[2]);
        WebSocketChannel channel;
        try {
            channel = (WebSocketChannel) new HybridConnectionClient(new URI(args[0]), tokens)
                    .createConnectionAsync().join();
        } catch (RuntimeException err) {
            Events.error(err);
            System.exit(1);
            return;
        }
        Events.emit("open");
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = stdin.readLine()) != null) {
            JSONObject message = new JSONObject(line);
            if (message.getString("type").equals("text")) {
                channel.writeTextAsync(message.getString("data"), null).join();
                String echoed = channel.readTextAsync().join();
                Events.emit(Events.message("text", echoed.getBytes(StandardCharsets.UTF_8)));
            } else {
                channel.writeAsync(ByteBuffer.wrap(Base64.getDecoder().decode(message.getString("data")))).join();
                ByteBuffer echoed = channel.readAsync().join();
                byte[] bytes = new byte[echoed.remaining()];
                echoed.get(bytes);
                Events.emit(Events.message("binary", bytes));
            }
        }
        channel.closeAsync().join();
        Events.emit("close");
        System.exit(0);
    }
}
