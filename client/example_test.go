package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/client/clienttest"
)

func Example() {
	fc := clienttest.Start(3) // in a real program: the cluster's client URLs
	defer fc.Close()

	c, err := client.New(client.Config{Endpoints: fc.Endpoints(), RequestTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	if _, err := c.Put(ctx, "config/mode", "blue"); err != nil {
		log.Fatal(err)
	}
	// Flip the mode only if nobody changed it since we read it.
	resp, err := c.Txn(ctx).
		If(client.Compare(client.Value("config/mode"), "=", "blue")).
		Then(client.OpPut("config/mode", "green")).
		Else(client.OpGet("config/mode")).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	get, err := c.Get(ctx, "config/", client.WithPrefix())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetSucceeded(), string(get.GetKvs()[0].GetValue()))
	// Output: true green
}
